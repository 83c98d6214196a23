"""`python -m fer_keras.export`: the command in `fer_keras.modelio.export`."""

from fer_keras.modelio.export import main

if __name__ == "__main__":
    raise SystemExit(main())
