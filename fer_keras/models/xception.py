"""mini-Xception of Arriaga et al., the 58k-parameter real-time FER model (https://arxiv.org/abs/1710.07557)."""

from functools import partial

import keras
from keras import layers

from fer_keras.constants import NUM_CLASSES
from fer_keras.models.common import image_input, l2_regularizer
from fer_keras.models.layers import FusedBatchNormalization
from fer_keras.models.registry import register_model


@register_model
def mini_xception(*, stem_width=8, widths=(16, 32, 64, 128), l2=0.01):
    """mini-Xception: residual depthwise-separable modules, no dense layer https://arxiv.org/abs/1710.07557"""
    conv = partial(layers.Conv2D, use_bias=False, kernel_regularizer=l2_regularizer(l2))
    sepconv = partial(layers.SeparableConv2D, kernel_size=3, padding="same", use_bias=False,
                      depthwise_regularizer=l2_regularizer(l2), pointwise_regularizer=l2_regularizer(l2))
    batch_norm = partial(FusedBatchNormalization, fused_dtype="float32")  # faster here in bf16 training
    inputs, x = image_input()

    # Stem: two unpadded 3x3 convs.
    for i in (1, 2):
        x = conv(stem_width, 3, name=f"stem_conv{i}")(x)
        x = batch_norm(name=f"stem_bn{i}")(x)
        x = layers.ReLU(name=f"stem_relu{i}")(x)

    # Modules: two separable convs and a strided max pool, beside a strided 1x1 conv shortcut.
    for i, filters in enumerate(widths, 1):
        name = f"module{i}"
        shortcut = conv(filters, 1, strides=2, padding="same", name=f"{name}_shortcut_conv")(x)
        shortcut = batch_norm(name=f"{name}_shortcut_bn")(shortcut)
        x = sepconv(filters, name=f"{name}_sepconv1")(x)
        x = batch_norm(name=f"{name}_bn1")(x)
        x = layers.ReLU(name=f"{name}_relu1")(x)
        x = sepconv(filters, name=f"{name}_sepconv2")(x)
        x = batch_norm(name=f"{name}_bn2")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
        x = layers.Add(name=f"{name}_add")([x, shortcut])

    # Head: a 3x3 conv to one map per class, averaged; the float32 "logits" layer ends the model
    # as in every builder, here without weights to keep the original structure.
    x = layers.Conv2D(NUM_CLASSES, 3, padding="same", name="class_conv")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, layers.Activation("linear", dtype="float32", name="logits")(x), name="mini_xception")
