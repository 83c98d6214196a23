"""Pieces every builder shares: the normalising input, conv and dense blocks, the logits head."""

import keras
from keras import layers

from fer_keras.constants import IMAGE_SHAPE, NUM_CLASSES
from fer_keras.models.layers import FusedBatchNormalization


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


def l2_regularizer(l2):
    """L2 kernel regulariser of strength `l2` (the builders' `l2` option), or None when it is 0."""
    return keras.regularizers.L2(l2) if l2 else None


def conv_block(x, filters, *, name, convs=1, kernel_size=3, batch_norm=True, norm_after_activation=False,
               l2=0.0):
    """`convs` same-padded convolutions, each Conv-BN-ReLU (or Conv-ReLU-BN), named `{name}_conv1`, ...

    The bias is dropped where BatchNormalization directly follows the convolution.
    """
    for i in range(1, convs + 1):
        x = layers.Conv2D(
            filters, kernel_size, padding="same", use_bias=not batch_norm or norm_after_activation,
            kernel_regularizer=l2_regularizer(l2), name=f"{name}_conv{i}",
        )(x)
        if batch_norm and not norm_after_activation:
            x = FusedBatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
        if batch_norm and norm_after_activation:
            x = FusedBatchNormalization(name=f"{name}_bn{i}")(x)
    return x


def dense_head(x, units, *, dropout=0.0, batch_norm=False, activation="relu", l2=0.0):
    """Hidden layers `dense1`, `dense2`, ... (Dense-[BN]-activation-Dropout) before the logits.

    Without hidden layers the dropout acts on the incoming features instead.
    """
    for i, width in enumerate(units, 1):
        x = layers.Dense(width, use_bias=not batch_norm, kernel_regularizer=l2_regularizer(l2), name=f"dense{i}")(x)
        if batch_norm:
            x = FusedBatchNormalization(name=f"dense{i}_bn")(x)
        x = layers.Activation(activation, name=f"dense{i}_{activation}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"dense{i}_dropout")(x)
    if dropout and not units:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    return x
