"""`python -m fer_keras.serve`: the command in `fer_keras.inference.serve`."""

from fer_keras.inference.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
