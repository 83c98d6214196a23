"""Residual networks of basic blocks (https://arxiv.org/abs/1512.03385) sized for 48x48 faces."""

from functools import partial

import keras
from keras import layers

from fer_keras.models.common import dense_head, image_input, l2_regularizer, logits
from fer_keras.models.layers import FusedBatchNormalization
from fer_keras.models.registry import register_model


def _basic_block(x, filters, *, stride, name, conv):
    """Two 3x3 Conv-BN with an identity shortcut, or a 1x1 Conv-BN one where the shape changes."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv(filters, 1, strides=stride, name=f"{name}_shortcut_conv")(x)
        shortcut = FusedBatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    x = conv(filters, 3, strides=stride, name=f"{name}_conv1")(x)
    x = FusedBatchNormalization(name=f"{name}_bn1")(x)
    x = layers.ReLU(name=f"{name}_relu1")(x)
    x = conv(filters, 3, name=f"{name}_conv2")(x)
    x = FusedBatchNormalization(name=f"{name}_bn2")(x)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def _resnet(name, *, widths, depth, dropout, l2, kernel_initializer="glorot_uniform", imagenet_stem=False):
    """Stem, one stage of `depth` basic blocks per entry of `widths` (stages after the first start
    with stride 2), global average pooling, dropout, logits."""
    conv = partial(
        layers.Conv2D, padding="same", use_bias=False, kernel_initializer=kernel_initializer,
        kernel_regularizer=l2_regularizer(l2),
    )
    inputs, x = image_input()

    # Stem: one 3x3 conv at full resolution (48x48 is already small), or the paper's ImageNet stem,
    # a 7x7 stride-2 conv and 3x3 stride-2 max pooling zero-padded as PyTorch pads them (48 -> 12).
    if imagenet_stem:
        x = layers.ZeroPadding2D(3, name="stem_pad")(x)
        x = conv(widths[0], 7, strides=2, padding="valid", name="stem_conv")(x)
    else:
        x = conv(widths[0], 3, name="stem_conv")(x)
    x = FusedBatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    if imagenet_stem:
        x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)  # zeros after a ReLU act as PyTorch's -inf
        x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)

    # Stages
    for s, filters in enumerate(widths, 1):
        for b in range(1, depth + 1):
            stride = 2 if s > 1 and b == 1 else 1
            x = _basic_block(x, filters, stride=stride, name=f"stage{s}_block{b}", conv=conv)

    # Head
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = dense_head(x, (), dropout=dropout)
    return keras.Model(inputs, logits(x), name=name)


@register_model
def resnet_fer(*, widths=(32, 64, 128), depth=2, dropout=0.0, l2=0.0):
    """Project 002's ResNet: stem 32, three stages of two basic blocks (32, 64, 128) https://arxiv.org/abs/1512.03385"""
    return _resnet("resnet_fer", widths=widths, depth=depth, dropout=dropout, l2=l2)


@register_model
def resnet_fer_wide(*, widths=(64, 128, 256), depth=2, dropout=0.5, l2=0.0):
    """Project 000's 2,778,311-parameter ResNetFER: ImageNet stem, stages 64-256 https://arxiv.org/abs/1512.03385"""
    return _resnet("resnet_fer_wide", widths=widths, depth=depth, dropout=dropout, l2=l2, imagenet_stem=True)


@register_model
def resnet_deep(*, widths=(64, 128, 256, 512), depth=2, dropout=0.3, l2=0.0):
    """ResNet-18-like: 8 basic blocks (64-512), He initialisation https://arxiv.org/abs/1512.03385"""
    return _resnet(
        "resnet_deep", widths=widths, depth=depth, dropout=dropout, l2=l2,
        kernel_initializer="he_normal",
    )
