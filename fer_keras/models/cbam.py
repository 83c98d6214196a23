"""CNN with CBAM attention after every conv block (https://arxiv.org/abs/1807.06521)."""

import keras
from keras import layers

from fer_keras.models.common import conv_block, dense_head, image_input, logits
from fer_keras.models.layers import ChannelAttention, SpatialAttention
from fer_keras.models.registry import register_model


@register_model
def cbam_cnn(*, widths=(32, 64, 128), ratio=8, dense_units=(256,), dropout=0.5, l2=0.0):
    """Three double-conv blocks (32, 64, 128) each refined by CBAM https://arxiv.org/abs/1807.06521"""
    inputs, x = image_input()

    # Stages: conv block, channel then spatial attention, max pooling.
    for i, filters in enumerate(widths, 1):
        x = conv_block(x, filters, name=f"block{i}", convs=2, l2=l2)
        x = ChannelAttention(ratio, name=f"block{i}_channel_attention")(x)
        x = SpatialAttention(name=f"block{i}_spatial_attention")(x)
        x = layers.MaxPooling2D(name=f"block{i}_pool")(x)

    # Head
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = dense_head(x, dense_units, dropout=dropout, batch_norm=True, l2=l2)
    return keras.Model(inputs, logits(x), name="cbam_cnn")
