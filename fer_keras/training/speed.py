"""How fast a run trains: the fast-path settings it used (all picked automatically) and the training
images per second it achieved, for metrics.json."""

import keras

from fer_keras.models.layers import FusedBatchNormalization


def _layers(layer):
    """`layer` and every layer nested in it."""
    yield layer
    for sub in getattr(layer, "layers", ()):
        yield from _layers(sub)


def speed_settings(model):
    """The settings that decide a compiled `model`'s training speed: the backend, whether its batch
    norm layers use TensorFlow's fused kernel (FusedBatchNormalization does by itself on TF), XLA
    (Keras' `auto` leaves it off on CPU, where it trains deep_cnn several times slower) and
    steps per execution."""
    norms = [layer for layer in _layers(model) if isinstance(layer, FusedBatchNormalization)]
    backend = keras.backend.backend()
    return {
        "backend": backend,
        "fused_batchnorm": backend == "tensorflow" and bool(norms) and all(n.fused is not False for n in norms),
        "jit_compile": bool(model.jit_compile),
        "steps_per_execution": int(model.steps_per_execution),
    }


def images_per_second(train_images, history_rows):
    """Training images per second of epoch wall time (validation included) over `history_rows`
    (history.csv rows with `epoch_time`); None before any epoch."""
    seconds = sum(float(row["epoch_time"]) for row in history_rows)
    return round(train_images * len(history_rows) / seconds, 1) if seconds > 0 else None
