"""Grad-CAM heat maps over sample faces: where the network looks (https://arxiv.org/abs/1610.02391).

`python -m fer_keras.evaluation.explain [--model PATH] [--data PATH] [--n 16] --out grid.png [--split NAME]
[--layer NAME] [--seed S]`
"""

import math

import keras
import tensorflow as tf

from fer_keras import pretrained
from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.constants import CLASS_NAMES, IMAGE_SIZE
from fer_keras.data import default_data, load_fer2013, sample_faces
from fer_keras.errors import FerError
from fer_keras.core.io import atomic_path, check_output
from fer_keras.modelio.saving import load_keras_model

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


def plot_grid(images, heatmaps, probs, labels, path, alpha=0.45):
    """Faces with their heat maps (jet) in a grid, titled true / predicted label; PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        pred = int(probs[i].argmax())
        ax.imshow(images[i, ..., 0], cmap="gray", vmin=0, vmax=255)
        ax.imshow(heatmaps[i], cmap="jet", alpha=alpha, vmin=0, vmax=1)
        title = f"pred {CLASS_NAMES[pred]} {probs[i, pred]:.2f}"
        color = "black"
        if labels is not None:
            title = f"true {CLASS_NAMES[labels[i]]}\n{title}"
            color = "green" if labels[i] == pred else "red"
        ax.set_title(title, fontsize=8, color=color)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


@user_errors
def main(argv=None):
    parser = ArgumentParser(prog="python -m fer_keras.evaluation.explain", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .keras file or a run folder with model.keras (default: the shipped model)")
    parser.add_argument("--data", help="FER2013 CSV (any layout; default: the synthetic default data)")
    parser.add_argument("--n", type=int, default=16, help="number of faces (default 16)")
    parser.add_argument("--out", required=True, help="PNG file for the grid")
    parser.add_argument("--split", help="only rows with this Usage (Training, PublicTest, PrivateTest)")
    parser.add_argument("--layer", help="layer to explain (default: the last convolutional feature map)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the face sample")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    check_output(args.out)

    if args.model:
        model = load_keras_model(args.model)
    else:
        print(pretrained.describe())
        model = pretrained.load()
    layer = target_layer(model, args.layer)
    faces = sample_faces(load_fer2013(args.data or default_data()), args.n, args.seed, args.split)
    heatmaps, probs = grad_cam(model, faces.images, layer)
    plot_grid(faces.images, heatmaps, probs, faces.labels, args.out)
    print(f"Grad-CAM of layer {layer} on {len(faces)} faces written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
