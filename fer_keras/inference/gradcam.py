"""Grad-CAM (https://arxiv.org/abs/1610.02391): where a convolutional network looks, as a heat map per face,
and the one way every command draws it: the face in grey under its heat map in the jet colour map."""

import keras
import numpy as np
import tensorflow as tf

from fer_keras.constants import IMAGE_SIZE
from fer_keras.errors import FerError

OVERLAY_ALPHA = 0.45  # weight of the heat map's colour over the face

# Layers that only resample or regularise a feature map: Grad-CAM looks at the map before them.
_PASS_THROUGH = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.ZeroPadding2D,
)


def _has_conv_kernel(layer):
    """Whether the layer (or a block nested in it) owns a 2D convolution kernel (rank-4 weight)."""
    return any(len(w.shape) == 4 for w in layer.weights)


def _spatial_output(layer):
    """Whether the layer's output is a feature map (batch, H, W, C) with H, W > 1."""
    shape = layer.output.shape
    return len(shape) == 4 and shape[1] > 1 and shape[2] > 1


def feature_layers(model):
    """Names of the layers whose outputs Grad-CAM can use: feature maps at or after the first conv."""
    names, seen_conv = [], False
    for layer in model.layers:
        seen_conv = seen_conv or _has_conv_kernel(layer)
        if seen_conv and not isinstance(layer, _PASS_THROUGH) and _spatial_output(layer):
            names.append(layer.name)
    return names


def target_layer(model, name=None):
    """The layer Grad-CAM explains: `name`, else the last convolutional feature map (block output,
    CBAM-refined features) before the model pools or flattens it."""
    candidates = feature_layers(model)
    if not candidates:
        raise FerError(
            f"model {model.name} has no convolutional layer with a spatial feature map: Grad-CAM needs one "
            "(MLP and ViT models have none)"
        )
    if name is None:
        return candidates[-1]
    if name not in candidates:
        raise FerError(f"layer {name!r} is not a convolutional feature map of {model.name}; choose one of: "
                       f"{', '.join(candidates)}")
    return name


def grad_cam(model, images, layer=None):
    """Grad-CAM of the predicted class: (heat maps (N, 48, 48) in [0, 1], probabilities (N, 7)).

    Heat map = ReLU(sum_k alpha_k A_k), alpha_k = spatial mean of d logit / d A_k, upsampled
    bilinearly to the input size and scaled to a maximum of 1 per image.
    """
    grad_model = keras.Model(model.inputs, [model.get_layer(target_layer(model, layer)).output, model.output])
    x = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        features, logits = grad_model(x, training=False)
        logits = tf.cast(logits, tf.float32)
        predicted = tf.argmax(logits, axis=-1)
        score = tf.gather(logits, predicted, batch_dims=1)
    # Differentiate with respect to the layer's own output (bfloat16 under mixed precision), then cast.
    grads = tf.cast(tape.gradient(score, features), tf.float32)
    features = tf.cast(features, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, (IMAGE_SIZE, IMAGE_SIZE))[..., 0]
    cam = cam / tf.maximum(tf.reduce_max(cam, axis=(1, 2), keepdims=True), 1e-12)
    return cam.numpy(), tf.nn.softmax(logits).numpy()


def overlay(face, heatmap, alpha=OVERLAY_ALPHA):
    """A uint8 RGB image (48, 48, 3): the grey face ((48, 48) or (48, 48, 1), 0-255) under its heat map
    ((48, 48) in [0, 1]) in the jet colour map."""
    from matplotlib import colormaps

    grey = np.repeat(np.asarray(face, np.float32).reshape(heatmap.shape)[..., None] / 255.0, 3, axis=-1)
    colour = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3]
    return (((1 - alpha) * grey + alpha * colour) * 255).round().astype(np.uint8)
