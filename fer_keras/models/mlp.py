"""Fully connected baseline: shows what a network without convolutions reaches on faces."""

import keras
from keras import layers

from fer_keras.models.common import dense_head, image_input, logits
from fer_keras.models.registry import register_model


@register_model
def mlp(*, dense_units=(512, 256, 128), dropout=0.0, l2=0.0):
    """Fully connected 512-256-128 on the flattened image (the "why CNNs" baseline)."""
    inputs, x = image_input()
    x = layers.Flatten(name="flatten")(x)
    x = dense_head(x, dense_units, dropout=dropout, l2=l2)
    return keras.Model(inputs, logits(x), name="mlp")
