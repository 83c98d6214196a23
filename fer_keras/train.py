"""`python -m fer_keras.train`: the command in `fer_keras.training.train`."""

from fer_keras.training.train import main

if __name__ == "__main__":
    raise SystemExit(main())
