"""FER2013 data: reading every CSV layout, splits, the synthetic default set and tf.data pipelines.

`make_dataset` and `class_weights` (module `pipeline`) import TensorFlow, so they load on first use:
reading and the `python -m fer_keras.data` commands stay quick.
"""

from fer_keras.data.ferdata import FERData, Problem
from fer_keras.data.reader import load_fer2013
from fer_keras.data.splits import sample_faces, split_data
from fer_keras.data.synthetic import default_data
from fer_keras.errors import DataError

__all__ = ["DataError", "FERData", "Problem", "class_weights", "default_data", "load_fer2013", "make_dataset",
           "sample_faces", "split_data"]
_PIPELINE = ("class_weights", "make_dataset")


def __getattr__(name):
    if name in _PIPELINE:
        from fer_keras.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
