"""Pieces every builder shares: the normalising input and the logits head."""

import keras
from keras import layers

from fer_keras.constants import IMAGE_SHAPE, NUM_CLASSES


def image_input():
    """Input of raw 0-255 grayscale faces, rescaled to [-1, 1] inside the model.

    Normalisation lives in the model so that training, export and prediction all feed 0-255.
    Returns `(inputs, x)`.
    """
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    return inputs, layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)


def logits(x, num_classes=NUM_CLASSES):
    """Final class logits, kept float32 under mixed precision (losses use `from_logits=True`)."""
    return layers.Dense(num_classes, dtype="float32", name="logits")(x)
