"""CNNs with CBAM attention on every conv block (https://arxiv.org/abs/1807.06521)."""

import keras
from keras import layers

from fer_keras.models.common import conv_block, dense_head, image_input, logits
from fer_keras.models.layers import ChannelAttention, SpatialAttention
from fer_keras.models.registry import register_model


def _cbam_cnn(name, *, widths, ratio, dense_units, dropout, l2, spatial_kernel_size=7, attend_after_pool=False):
    """Double-conv blocks refined by channel then spatial attention, before max pooling as in the
    paper or after it; global average pooling and a dense head with BN."""
    inputs, x = image_input()

    # Stages: conv block, attention and max pooling.
    for i, filters in enumerate(widths, 1):
        x = conv_block(x, filters, name=f"block{i}", convs=2, l2=l2)
        pool = layers.MaxPooling2D(name=f"block{i}_pool")
        if attend_after_pool:
            x = pool(x)
        x = ChannelAttention(ratio, name=f"block{i}_channel_attention")(x)
        x = SpatialAttention(spatial_kernel_size, name=f"block{i}_spatial_attention")(x)
        if not attend_after_pool:
            x = pool(x)

    # Head
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = dense_head(x, dense_units, dropout=dropout, batch_norm=True, l2=l2)
    return keras.Model(inputs, logits(x), name=name)


@register_model
def cbam_cnn(*, widths=(32, 64, 128), ratio=8, dense_units=(256,), dropout=0.5, l2=0.0):
    """Three double-conv blocks (32, 64, 128) each refined by CBAM https://arxiv.org/abs/1807.06521"""
    return _cbam_cnn("cbam_cnn", widths=widths, ratio=ratio, dense_units=dense_units, dropout=dropout, l2=l2)


@register_model
def p004_cbam_cnn(*, widths=(32, 64, 128), ratio=8, dense_units=(256,), dropout=0.5, l2=0.0):
    """Project 004's CBAM CNN: CBAM after each block's pooling, 1x1 spatial conv https://arxiv.org/abs/1807.06521"""
    return _cbam_cnn("p004_cbam_cnn", widths=widths, ratio=ratio, dense_units=dense_units, dropout=dropout, l2=l2,
                     spatial_kernel_size=1, attend_after_pool=True)
