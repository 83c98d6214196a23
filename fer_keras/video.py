"""`python -m fer_keras.video`: the command in `fer_keras.inference.video`."""

from fer_keras.inference.video import main

if __name__ == "__main__":
    raise SystemExit(main())
