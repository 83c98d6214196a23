"""Custom layers Keras lacks: CBAM attention, the ViT token embeddings, a batch-axis swap, and a
batch normalization that uses TensorFlow's fused kernel when training.

All are serialisable (`.keras` files load them by their registered name) and use only `keras.ops`,
except the fused kernel, which runs only on the TensorFlow backend.
"""

from functools import partial

import keras
from keras import ops

register = keras.saving.register_keras_serializable(package="fer_keras")


@register
class ChannelAttention(keras.layers.Layer):
    """CBAM channel attention: a shared MLP over average- and max-pooled features gates each channel.

    https://arxiv.org/abs/1807.06521 (section 3.1); `ratio` is the MLP's reduction ratio.
    """

    def __init__(self, ratio=8, **kwargs):
        super().__init__(**kwargs)
        self.ratio = ratio

    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = max(channels // self.ratio, 1)
        kernel = partial(self.add_weight, initializer="glorot_uniform")
        bias = partial(self.add_weight, initializer="zeros")
        self.hidden_kernel = kernel(shape=(channels, hidden), name="hidden_kernel")
        self.hidden_bias = bias(shape=(hidden,), name="hidden_bias")
        self.output_kernel = kernel(shape=(hidden, channels), name="output_kernel")
        self.output_bias = bias(shape=(channels,), name="output_bias")

    def _mlp(self, x):
        x = ops.relu(ops.matmul(x, self.hidden_kernel) + self.hidden_bias)
        return ops.matmul(x, self.output_kernel) + self.output_bias

    def call(self, inputs):
        avg = self._mlp(ops.mean(inputs, axis=(1, 2), keepdims=True))
        peak = self._mlp(ops.max(inputs, axis=(1, 2), keepdims=True))
        return inputs * ops.sigmoid(avg + peak)

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio}


@register
class SpatialAttention(keras.layers.Layer):
    """CBAM spatial attention: a conv over channel-wise mean and max gates each position.

    https://arxiv.org/abs/1807.06521 (section 3.2).
    """

    def __init__(self, kernel_size=7, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size

    def build(self, input_shape):
        shape = (self.kernel_size, self.kernel_size, 2, 1)
        self.kernel = self.add_weight(shape=shape, initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(1,), initializer="zeros", name="bias")

    def gate(self, inputs):
        """The attention map itself, (batch, H, W, 1) in (0, 1): what `call` multiplies the features by."""
        pooled = ops.concatenate(
            [ops.mean(inputs, axis=-1, keepdims=True), ops.max(inputs, axis=-1, keepdims=True)], axis=-1
        )
        # Called outside `call` (explain --attention), variables are not autocast to the policy's dtype.
        kernel, bias = (ops.cast(w, pooled.dtype) for w in (self.kernel, self.bias))
        return ops.sigmoid(ops.conv(pooled, kernel, padding="same") + bias)

    def call(self, inputs):
        return inputs * self.gate(inputs)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@register
class PatchEmbedding(keras.layers.Layer):
    """Cuts images into non-overlapping `patch_size` squares and projects each to `hidden_dim`.

    Output: (batch, patches, hidden_dim). https://arxiv.org/abs/2010.11929 (eq. 1).
    """

    def __init__(self, patch_size, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim

    def build(self, input_shape):
        shape = (self.patch_size, self.patch_size, input_shape[-1], self.hidden_dim)
        self.kernel = self.add_weight(shape=shape, initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.hidden_dim,), initializer="zeros", name="bias")

    def call(self, images):
        x = ops.conv(images, self.kernel, strides=self.patch_size) + self.bias
        return ops.reshape(x, (-1, x.shape[1] * x.shape[2], self.hidden_dim))

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size, "hidden_dim": self.hidden_dim}


@register
class ClassToken(keras.layers.Layer):
    """Prepends one learned token to a sequence; the classifier reads it after the encoder.

    https://arxiv.org/abs/2010.11929 (eq. 1). Initialised to zeros, or truncated normal with `stddev`.
    """

    def __init__(self, stddev=0.0, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev

    def build(self, input_shape):
        initializer = keras.initializers.TruncatedNormal(stddev=self.stddev) if self.stddev else "zeros"
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer=initializer, name="token")

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        cls = ops.broadcast_to(self.token, (batch, 1, tokens.shape[-1]))
        return ops.concatenate([cls, tokens], axis=1)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


@register
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding per sequence position (truncated normal with `stddev` at init).

    https://arxiv.org/abs/2010.11929 (eq. 1).
    """

    def __init__(self, stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev

    def build(self, input_shape):
        initializer = keras.initializers.TruncatedNormal(stddev=self.stddev)
        self.embedding = self.add_weight(shape=tuple(input_shape[1:]), initializer=initializer, name="embedding")

    def call(self, tokens):
        return tokens + self.embedding

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


@register
class SwapBatchAxis(keras.layers.Layer):
    """Swaps the batch axis and the next one: (batch, tokens, dim) <-> (tokens, batch, dim).

    It reproduces a sequence-first PyTorch layer (nn.TransformerEncoderLayer without
    batch_first=True) fed batch-first tensors: what the layer takes for the sequence is the batch.
    """

    def call(self, inputs):
        return ops.swapaxes(inputs, 0, 1)


# TensorFlow's fused batch norm kernel refuses a smaller epsilon.
FUSED_MIN_EPSILON = 1.001e-5


@register
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, with training batches of images normalised by TensorFlow's fused
    kernel (oneDNN on CPU) on the TensorFlow backend.

    Keras 3 computes batch statistics and their gradients as a dozen separate float32 ops; they took
    two thirds of a deep_cnn training step on CPU. The fused kernel (which TensorFlow also fuses
    with a following ReLU) gives the same outputs, gradients and moving statistics up to rounding.
    Inference, other backends, non-image inputs, masks, renorm and synchronized statistics use
    Keras' own code. `fused=False` always does (Keras 2's argument of that name).
    `fused_dtype="float32"` hands the kernel float32 inputs under mixed precision: in mini_xception
    (separable convolutions, 8-128 channels) oneDNN's bfloat16 kernel made training 3-4x slower than
    the float32 one, while in deep_cnn it is the faster.
    """

    def __init__(self, fused=None, fused_dtype=None, **kwargs):
        super().__init__(**kwargs)
        self.fused = fused
        self.fused_dtype = fused_dtype

    def uses_fused_kernel(self, inputs, training=True, mask=None):
        """Whether `call` hands these inputs to TensorFlow's fused kernel."""
        return (
            self.fused is not False and bool(training) and self.trainable and mask is None
            and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
            and self.axis in (-1, 3) and not self.renorm and not self.synchronized
            and self.epsilon >= FUSED_MIN_EPSILON
        )

    def call(self, inputs, training=None, mask=None):
        if not self.uses_fused_kernel(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        if self.fused_dtype:
            inputs = ops.cast(inputs, self.fused_dtype)
        channels = inputs.shape[-1]
        scale = ops.cast(self.gamma, "float32") if self.scale else ops.ones((channels,))
        offset = ops.cast(self.beta, "float32") if self.center else ops.zeros((channels,))
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        # The kernel returns the unbiased batch variance; Keras' moving average takes the biased one.
        count = ops.cast(ops.size(inputs) // channels, "float32")
        variance = variance * ops.maximum(count - 1.0, 0.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "fused": self.fused, "fused_dtype": self.fused_dtype}
