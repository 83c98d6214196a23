"""The one classifier of 48x48 faces behind every prediction (API, predict, serve, video, evaluation,
distillation): one model or an ensemble (probabilities averaged), each a Keras model, a SavedModel or a
`.tflite` file, with optional test-time augmentation (`fer_keras.inference.tta`)."""

import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from scipy.special import softmax

from fer_keras.constants import IMAGE_SHAPE, IMAGE_SIZE, NUM_CLASSES
from fer_keras.core.cli import keras_verbosity
from fer_keras.errors import ImageError, ModelError
from fer_keras.inference.tta import tta_mode, tta_views
from fer_keras.modelio import tflite
from fer_keras.modelio.saving import is_savedmodel, load_keras_model, load_savedmodel


class Predictor:
    """Faces in, probabilities out: `predict_proba(faces)` -> (N, 7).

    `models` is one model or a list of them (an ensemble): Keras models, or functions float32 faces
    (N, 48, 48, 1) in 0-255 -> probabilities (N, 7), as `load_model` gives for SavedModels and TFLite
    files. `tta` is a mode of `tta_mode` (True: flip). `keras_models` are the Keras ones (Grad-CAM needs them).

    >>> Predictor.load(["runs/a", "runs/b/savedmodel"], tta=True).predict_proba(np.zeros((2, 48, 48), np.uint8)).shape
    (2, 7)
    """

    def __init__(self, models, tta=None):
        self.models = list(models) if isinstance(models, (list, tuple)) else [models]
        if not self.models:
            raise ModelError("no model given")
        self.tta = tta_mode(tta)
        self._functions = [_keras_function(m) if isinstance(m, keras.Model) else m for m in self.models]

    @classmethod
    def load(cls, paths, tta=None):
        """A predictor of the model at `paths` (a run folder, `.keras` file, SavedModel or `.tflite` file), or
        of the ensemble of a list of them; ModelError naming a missing or unusable one."""
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        return cls([load_model(path) for path in paths], tta=tta)

    @property
    def keras_models(self):
        return [model for model in self.models if isinstance(model, keras.Model)]

    def predict_proba(self, faces, batch_size=256, verbose=False):
        """Mean probabilities (N, 7) over the models and the test-time views of each face, for grayscale faces
        uint8 or float in 0-255: (N, 48, 48), (N, 48, 48, 1) or a single (48, 48). Made a batch at a time, so
        that no view of the whole input is held; ImageError for faces of another type, shape or range."""
        faces = check_faces(faces)
        starts = range(0, len(faces), batch_size)
        total = np.zeros((len(faces), NUM_CLASSES), np.float64)
        steps = len(self._functions) * len(starts)
        progress = keras.utils.Progbar(steps, verbose=keras_verbosity()) if verbose and steps > 1 else None
        for start in starts:
            views = tta_views(faces[start : start + batch_size], self.tta)
            for predict in self._functions:
                total[start : start + batch_size] += np.mean([predict(view.astype(np.float32)) for view in views],
                                                             axis=0, dtype=np.float64)
                if progress:
                    progress.add(1)
        return (total / len(self._functions)).astype(np.float32)


def load_model(path):
    """The model at `path`: a Keras model for a `.keras` file or run folder; for a SavedModel folder or a
    `.tflite` file, a function float32 faces (N, 48, 48, 1) in 0-255 -> probabilities (N, 7).
    ModelError naming a missing path or one that is not a fer_keras model."""
    if not Path(path).exists():
        raise ModelError(f"{path}: no such model file or folder")
    if tflite.is_tflite(path):
        return tflite.load_tflite(path)
    if is_savedmodel(path):
        serve = load_savedmodel(path)
        return lambda x: serve(image=tf.constant(x))["probabilities"].numpy()
    return load_keras_model(path)


def _keras_function(model):
    """Float32 faces -> float32 probabilities of a Keras model (its logits through a softmax)."""
    return lambda x: softmax(np.asarray(model.predict_on_batch(x), np.float32), axis=-1)


def check_faces(faces):
    """`faces` as an array (N, 48, 48, 1) of uint8, or of floats in 0-255 (N may be 0); ImageError saying what
    is wrong."""
    faces = np.asarray(faces)
    shape = faces.shape
    if not (faces.dtype == np.uint8 or np.issubdtype(faces.dtype, np.floating)):
        raise ImageError(f"expected uint8 or float faces (values 0-255), got dtype {faces.dtype}")
    if faces.shape in ((IMAGE_SIZE, IMAGE_SIZE), IMAGE_SHAPE):
        faces = faces[None]
    if faces.ndim == 3:
        faces = faces[..., None]
    if faces.ndim != 4 or faces.shape[1:] != IMAGE_SHAPE:
        raise ImageError(f"expected faces of shape (N, 48, 48), (N, 48, 48, 1) or (48, 48), got {shape}")
    if faces.dtype != np.uint8 and len(faces) and not (
            np.isfinite(faces).all() and faces.min() >= 0 and faces.max() <= 255):
        raise ImageError("float faces must hold finite values in 0-255 (the models' input scale)")
    return faces
