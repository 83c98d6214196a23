"""`python -m fer_keras.predict`: the command in `fer_keras.inference.predict`."""

from fer_keras.inference.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
