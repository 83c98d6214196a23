"""Finding and loading a run's Keras model: a `.keras` file, or a run folder holding `model.keras`."""

from pathlib import Path

import keras

import fer_keras.models  # noqa: F401  (registers the zoo's custom layers for loading .keras files)
from fer_keras.errors import FerError

MODEL_FILE = "model.keras"


def resolve_model_file(path):
    """The `.keras` file named by `path`: the file itself or a run folder's `model.keras`."""
    path = Path(path)
    if path.is_dir():
        if is_savedmodel(path):
            raise FerError(f"{path} is a SavedModel; this needs the Keras model (.keras file or run folder)")
        path = path / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no model at {path}")
    if path.suffix != ".keras":
        raise FerError(f"{path}: expected a .keras file or a run folder holding {MODEL_FILE}")
    return path


def load_keras_model(path):
    """Load a `.keras` model (or a run folder's); importing fer_keras.models registered its custom layers."""
    return keras.saving.load_model(resolve_model_file(path), compile=False)


def is_savedmodel(path):
    """Whether `path` is a SavedModel folder."""
    return (Path(path) / "saved_model.pb").exists()
