"""Plain convolutional networks: conv blocks with max pooling, then a dense head.

Every member of the family is one call of `_plain_cnn`, configured by lists. `pNNN_<name>` builders
are networks of original project NNN under that project's own name (several projects have a
"deep CNN" or a "simple CNN").
"""

import keras
from keras import layers

from fer_keras.models.common import conv_block, dense_head, image_input, logits
from fer_keras.models.registry import register_model


def _plain_cnn(name, *, widths, convs_per_block=1, kernel_size=3, batch_norm=False, norm_after_activation=False,
               conv_dropout=0.0, spatial_dropout=0.0, pooling="flatten", feature_dropout=0.0, dense_units=(),
               dropout=0.0, dense_batch_norm=False, l2=0.0):
    """Blocks of `convs_per_block` convolutions (one block per entry of `widths`), each followed by
    2x2 max pooling and optional (spatial) dropout; then flatten or global average pooling, optional
    dropout on those features, and the dense head (`dropout` after each hidden layer).
    """
    inputs, x = image_input()

    # Stages
    for i, filters in enumerate(widths, 1):
        x = conv_block(
            x, filters, name=f"block{i}", convs=convs_per_block, kernel_size=kernel_size, batch_norm=batch_norm,
            norm_after_activation=norm_after_activation, l2=l2,
        )
        x = layers.MaxPooling2D(name=f"block{i}_pool")(x)
        if spatial_dropout:
            x = layers.SpatialDropout2D(spatial_dropout, name=f"block{i}_spatial_dropout")(x)
        if conv_dropout:
            x = layers.Dropout(conv_dropout, name=f"block{i}_dropout")(x)

    # Head
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    if feature_dropout:
        x = layers.Dropout(feature_dropout, name="features_dropout")(x)
    x = dense_head(x, dense_units, dropout=dropout, batch_norm=dense_batch_norm, l2=l2)
    return keras.Model(inputs, logits(x), name=name)


@register_model
def tiny_cnn(*, widths=(16,), l2=0.0):
    """One 16-filter conv layer, max pooling and the logits layer (the underfitting study)."""
    return _plain_cnn("tiny_cnn", widths=widths, l2=l2)


@register_model
def simple_cnn(*, widths=(32, 64), dense_units=(128, 64), dropout=0.0, l2=0.0):
    """Two conv blocks (32, 64) with max pooling, dense 128 and 64."""
    return _plain_cnn("simple_cnn", widths=widths, dense_units=dense_units, dropout=dropout, l2=l2)


@register_model
def p000_simple_cnn(*, widths=(32, 64), dense_units=(512,), dropout=0.5, l2=0.0):
    """Project 000's SimpleCNN: two conv blocks (32, 64) with max pooling, dense 512, dropout 0.5 (4.74M)."""
    return _plain_cnn("p000_simple_cnn", widths=widths, dense_units=dense_units, dropout=dropout, l2=l2)


@register_model
def p000_deep_cnn(*, widths=(32, 64, 128, 256), dense_units=(512, 256), dropout=0.5, l2=0.0):
    """Project 000's DeepCNN: four Conv-BN-ReLU-MaxPool blocks (32-256), dense 512-256, dropout 0.5 (1.70M)."""
    return _plain_cnn(
        "p000_deep_cnn", widths=widths, batch_norm=True, dense_units=dense_units, dropout=dropout, l2=l2,
    )


@register_model
def baseline_cnn(*, widths=(32, 64), feature_dropout=0.3, dense_units=(128,), dropout=0.3, l2=0.0):
    """Baseline CNN v1: 5x5 convs 32 and 64 with max pooling, dropout 0.3 before and after dense 128."""
    return _plain_cnn(
        "baseline_cnn", widths=widths, kernel_size=5, feature_dropout=feature_dropout, dense_units=dense_units,
        dropout=dropout, l2=l2,
    )


@register_model
def p004_baseline_cnn_v2(*, widths=(32, 64), spatial_dropout=0.2, feature_dropout=0.6, dense_units=(512, 256, 128),
                         dropout=0.6, l2=0.0):
    """Project 004's baseline v2: v1 plus BN, spatial dropout 0.2, average pooling, dense 512-256-128, dropout 0.6."""
    return _plain_cnn(
        "p004_baseline_cnn_v2", widths=widths, kernel_size=5, batch_norm=True, spatial_dropout=spatial_dropout,
        pooling="avg", feature_dropout=feature_dropout, dense_units=dense_units, dropout=dropout, l2=l2,
    )


@register_model
def cnn3(*, widths=(32, 64, 128), feature_dropout=0.5, dense_units=(256,), dropout=0.3, l2=0.0):
    """Three Conv-ReLU-BN-MaxPool blocks (32, 64, 128), dropout 0.5, dense 256, dropout 0.3."""
    return _plain_cnn(
        "cnn3", widths=widths, batch_norm=True, norm_after_activation=True, feature_dropout=feature_dropout,
        dense_units=dense_units, dropout=dropout, l2=l2,
    )


@register_model
def p002_wide_cnn(*, widths=(64, 128, 256), feature_dropout=0.5, dense_units=(512,), dropout=0.5, l2=0.0):
    """Project 002's second CNN: three Conv-BN-ReLU-MaxPool blocks (64, 128, 256), dropout 0.5 around dense 512."""
    return _plain_cnn(
        "p002_wide_cnn", widths=widths, batch_norm=True, feature_dropout=feature_dropout, dense_units=dense_units,
        dropout=dropout, l2=l2,
    )


@register_model
def p002_basic_cnn(*, widths=(32, 64, 128), conv_dropout=0.25, dense_units=(256,), dropout=0.5, l2=0.0):
    """Project 002's basic CNN: three Conv-BN-ReLU-MaxPool-Dropout(0.25) blocks, dense 256 with BN, dropout 0.5."""
    return _plain_cnn(
        "p002_basic_cnn", widths=widths, batch_norm=True, conv_dropout=conv_dropout, dense_units=dense_units,
        dropout=dropout, dense_batch_norm=True, l2=l2,
    )


@register_model
def improved_cnn(*, widths=(64, 128, 256), feature_dropout=0.4, dense_units=(1024, 512), dropout=0.4, l2=0.0):
    """Three blocks of two 3x3 convs (64, 128, 256) with BN and pooling, dropout 0.4 before and after dense 1024-512."""
    return _plain_cnn(
        "improved_cnn", widths=widths, convs_per_block=2, batch_norm=True, feature_dropout=feature_dropout,
        dense_units=dense_units, dropout=dropout, l2=l2,
    )


@register_model
def vgg_large(*, widths=(64, 128, 256, 512, 512), convs_per_block=1, dense_units=(1024, 512), dropout=0.0,
              l2=0.0):
    """Project 003's VGG: 5 conv blocks (64-512), dense 1024-512, no BN/dropout/decay https://arxiv.org/abs/1409.1556

    One conv a block, as the project's own outline lists one width a block (its simple CNN's too); with
    two, the network never leaves the majority class at the project's Adam 1e-3.
    """
    return _plain_cnn(
        "vgg_large", widths=widths, convs_per_block=convs_per_block, dense_units=dense_units, dropout=dropout,
        l2=l2,
    )


@register_model
def regularized_cnn(*, widths=(32, 64, 128, 256), conv_dropout=0.2, dense_units=(256,), dropout=0.5,
                    l2=5e-4):
    """Four double-conv BN blocks, dropout 0.2 after each, dense 256 with dropout 0.5, L2 5e-4 (weight decay 1e-3).

    PyTorch's Adam(weight_decay=1e-3) adds 1e-3 * w to each gradient: the gradient of L2(5e-4).
    """
    return _plain_cnn(
        "regularized_cnn", widths=widths, convs_per_block=2, batch_norm=True, conv_dropout=conv_dropout,
        dense_units=dense_units, dropout=dropout, l2=l2,
    )


def _deep_cnn(name, *, widths, spatial_dropout, dense_units, dropout, l2):
    """Double-conv BN blocks, global average pooling and dense layers with BN: deep_cnn and project
    004's deep CNN v1 and v2."""
    return _plain_cnn(
        name, widths=widths, convs_per_block=2, batch_norm=True, spatial_dropout=spatial_dropout,
        pooling="avg", dense_units=dense_units, dropout=dropout, dense_batch_norm=True, l2=l2,
    )


@register_model
def deep_cnn(*, widths=(32, 64, 128, 256), spatial_dropout=0.0, dense_units=(), dropout=0.5, l2=0.0):
    """Four double-conv BN blocks (32-256), global average pooling, dropout 0.5."""
    return _deep_cnn("deep_cnn", widths=widths, spatial_dropout=spatial_dropout, dense_units=dense_units,
                     dropout=dropout, l2=l2)


@register_model
def p004_deep_cnn_v1(*, widths=(32, 64, 128, 256), spatial_dropout=0.0, dense_units=(512,), dropout=0.5, l2=0.0):
    """Project 004's deep CNN v1: four double-conv BN blocks (32-256), avg pooling, dense 512 with BN, dropout 0.5."""
    return _deep_cnn("p004_deep_cnn_v1", widths=widths, spatial_dropout=spatial_dropout, dense_units=dense_units,
                     dropout=dropout, l2=l2)


@register_model
def deep_cnn_v2(*, widths=(32, 64, 128, 192), spatial_dropout=0.1, dense_units=(256,), dropout=0.7, l2=0.0):
    """Project 004's deep CNN v2 (and v3): spatial dropout 0.1, last block 192, dense 256 with BN, dropout 0.7."""
    return _deep_cnn("deep_cnn_v2", widths=widths, spatial_dropout=spatial_dropout, dense_units=dense_units,
                     dropout=dropout, l2=l2)


@register_model
def globalpool_cnn(*, widths=(64, 128, 256), dense_units=(256,), dropout=0.5, l2=0.0):
    """Three double-conv BN blocks (64-256), global average pooling instead of flatten, dense 256."""
    return _plain_cnn(
        "globalpool_cnn", widths=widths, convs_per_block=2, batch_norm=True, pooling="avg",
        dense_units=dense_units, dropout=dropout, l2=l2,
    )


@register_model
def p001_base_cnn(*, widths=(32, 64, 128), dense_units=(256,), l2=0.0):
    """Project 001's base CNN: three Conv-ReLU-MaxPool blocks (32, 64, 128) and dense 256, no BN or dropout."""
    return _plain_cnn("p001_base_cnn", widths=widths, dense_units=dense_units, l2=l2)


@register_model
def p001_deep_cnn(*, widths=(64, 128, 256), dense_units=(256,), l2=0.0):
    """Project 001's deep CNN: three double-conv BN blocks (64, 128, 256) and dense 256, no dropout (it overfit)."""
    return _plain_cnn(
        "p001_deep_cnn", widths=widths, convs_per_block=2, batch_norm=True, dense_units=dense_units, l2=l2,
    )


@register_model
def p001_dropout_cnn(*, widths=(64, 128, 256), spatial_dropout=0.25, dense_units=(256,), dropout=0.5,
                     dense_batch_norm=True, l2=0.0):
    """Project 001's dropout CNN: its deep CNN with spatial dropout 0.25 per block, dense 256 with BN and dropout 0.5.

    BN in the dense head is assumed (the seed gives no layout): without it, as the hybrid's, it stayed at the
    majority class under Adam 1e-3 (24.9% for all 8 epochs of the quick study).
    """
    return _plain_cnn(
        "p001_dropout_cnn", widths=widths, convs_per_block=2, batch_norm=True, spatial_dropout=spatial_dropout,
        dense_units=dense_units, dropout=dropout, dense_batch_norm=dense_batch_norm, l2=l2,
    )


@register_model
def hybrid_cnn(*, widths=(32, 64, 128), spatial_dropout=0.25, dense_units=(256, 128), dropout=0.5,
               dense_batch_norm=True, l2=0.0):
    """Three Conv-BN-ReLU-MaxPool-SpatialDropout(0.25) blocks, dense 256-128 with BN and dropout 0.5.

    Project 001: "each block is followed by BatchNorm, ReLU and Dropout". Without BN in the dense head
    it stayed at the majority class under Adam 1e-3 on full FER2013 (24.9% validation after 3 epochs).
    """
    return _plain_cnn(
        "hybrid_cnn", widths=widths, batch_norm=True, spatial_dropout=spatial_dropout, dense_units=dense_units,
        dropout=dropout, dense_batch_norm=dense_batch_norm, l2=l2,
    )


@register_model
def vgg_fer(*, widths=(64, 128, 256, 512), dense_units=(4096, 4096), dropout=0.2, l2=0.0):
    """VGG variant of Khaireddin & Chen, 73.28% on FER2013 https://arxiv.org/abs/2105.03588

    Four stages of two Conv-BN-ReLU and max pooling (64-512), FC 4096-4096 with dropout 0.2 (their
    code's default). Their 40x40 crops flatten to 2x2x512; our 48x48 input gives 3x3x512, hence
    about 40M parameters instead of 30M.
    """
    return _plain_cnn(
        "vgg_fer", widths=widths, convs_per_block=2, batch_norm=True, dense_units=dense_units, dropout=dropout,
        l2=l2,
    )
