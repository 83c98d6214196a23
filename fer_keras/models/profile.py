"""Model size: parameter counts, multiply-accumulates (MACs) per image.

The original projects counted parameters the PyTorch way, trainable ones only; Keras' count_params
adds two moving statistics per BatchNormalization channel. The table shows both.

MACs are counted from each layer's input and output shapes for Conv2D, DepthwiseConv2D,
SeparableConv2D, Dense (once per position of a sequence input), MultiHeadAttention (the four
projections and both attention matmuls) and the custom PatchEmbedding, ChannelAttention and
SpatialAttention layers. Normalisation, activations, pooling, additions and element-wise gating are
not counted (a few percent of the total at most).
"""

import math

from keras import layers

from fer_keras.models import layers as fer_layers
from fer_keras.models.registry import build_model, describe

def _conv_macs(layer):
    kernel = math.prod(layer.kernel_size) * layer.input.shape[-1] // layer.groups
    return math.prod(layer.output.shape[1:]) * kernel


def _depthwise_macs(layer):
    return math.prod(layer.output.shape[1:]) * math.prod(layer.kernel_size)


def _separable_macs(layer):
    height, width, filters = layer.output.shape[1:]
    depthwise_channels = layer.input.shape[-1] * layer.depth_multiplier
    return height * width * depthwise_channels * (math.prod(layer.kernel_size) + filters)


def _dense_macs(layer):
    return math.prod(layer.input.shape[1:]) * layer.units


def _attention_macs(layer):
    """Projections and both attention matmuls for one image. A None length is the batch (p002_vit
    attends across images), one image here."""
    query, value, *key = layer.input
    key = key[0] if key else value
    q_tokens, kv_tokens = (math.prod(d or 1 for d in t.shape[:-1]) for t in (query, value))
    kv_len = value.shape[1] or 1
    qk_dim, v_dim = layer.num_heads * layer.key_dim, layer.num_heads * layer.value_dim
    projections = (q_tokens * query.shape[-1] + kv_tokens * key.shape[-1]) * qk_dim
    projections += kv_tokens * value.shape[-1] * v_dim
    attention = q_tokens * kv_len * (qk_dim + v_dim)
    return projections + attention + q_tokens * v_dim * layer.output.shape[-1]


def _patch_macs(layer):
    return math.prod(layer.output.shape[1:]) * layer.patch_size**2 * layer.input.shape[-1]


def _channel_attention_macs(layer):
    return 2 * 2 * layer.hidden_kernel.shape[0] * layer.hidden_kernel.shape[1]


def _spatial_attention_macs(layer):
    return math.prod(layer.output.shape[1:3]) * math.prod(layer.kernel.shape)


_COUNTERS = {
    layers.Conv2D: _conv_macs,
    layers.DepthwiseConv2D: _depthwise_macs,
    layers.SeparableConv2D: _separable_macs,
    layers.Dense: _dense_macs,
    layers.MultiHeadAttention: _attention_macs,
    fer_layers.PatchEmbedding: _patch_macs,
    fer_layers.ChannelAttention: _channel_attention_macs,
    fer_layers.SpatialAttention: _spatial_attention_macs,
}


def count_macs(model):
    """Multiply-accumulates for one image through a built functional `model` (see module docstring)."""
    total = 0
    for layer in model.layers:
        for cls, counter in _COUNTERS.items():
            if isinstance(layer, cls):
                total += counter(layer)
    return total


def count_trainable(model):
    """Trainable parameters: Keras' count_params less BatchNormalization's moving mean and variance,
    i.e. what PyTorch's `sum(p.numel() for p in model.parameters())` reports for the same layers."""
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def profile(name):
    """`name`'s row of the model table: parameters (all, trainable), MACs and description."""
    model = build_model(name)
    return {
        "name": name,
        "params": model.count_params(),
        "trainable": count_trainable(model),
        "macs": count_macs(model),
        "description": describe(name),
    }
