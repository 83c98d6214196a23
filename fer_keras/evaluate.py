"""`python -m fer_keras.evaluate`: the command in `fer_keras.evaluation.evaluate`."""

from fer_keras.evaluation.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
