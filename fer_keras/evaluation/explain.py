"""Grad-CAM heat maps over sample faces, as a grid: where the network looks (`fer_keras.inference.gradcam`);
for CBAM networks, with `--attention`, each block's spatial-attention gate beside it.

`python -m fer_keras.evaluation.explain [--model PATH] [--data PATH] [--n 16] --out grid.png [--split NAME]
[--layer NAME] [--seed S] [--attention]`
"""

import math

import keras
import numpy as np

from fer_keras import pretrained
from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.constants import CLASS_NAMES, IMAGE_SIZE
from fer_keras.data import default_data, load_fer2013, sample_faces
from fer_keras.core.io import atomic_path, check_output
from fer_keras.inference.gradcam import grad_cam, overlay, target_layer
from fer_keras.errors import FerError
from fer_keras.models.layers import SpatialAttention
from fer_keras.modelio.saving import load_keras_model


def plot_grid(images, heatmaps, probs, labels, path):
    """Faces under their heat maps (`gradcam.overlay`) in a grid, titled true / predicted label; PNG written
    atomically."""
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
        ax.imshow(overlay(images[i], heatmaps[i]))
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


def attention_gates(model, images):
    """{layer name: (N, 48, 48) gate values in (0, 1)} of every CBAM spatial-attention layer: the map
    the layer multiplies its features by (not a gradient), upsampled to the face by nearest neighbour."""
    gated = [layer for layer in model.layers if isinstance(layer, SpatialAttention)]
    if not gated:
        raise FerError(f"model {model.name} has no CBAM spatial-attention layer: --attention needs one "
                       "(cbam_cnn, p004_cbam_cnn)")
    features = keras.Model(model.inputs, [layer.input for layer in gated])([np.asarray(images, np.float32)])
    gates = {}
    for layer, x in zip(gated, features if len(gated) > 1 else [features]):
        gate = keras.ops.convert_to_numpy(keras.ops.cast(layer.gate(x), "float32"))[..., 0]
        scale = IMAGE_SIZE // gate.shape[1]
        gates[layer.name] = np.kron(gate, np.ones((1, scale, scale), np.float32))
    return gates


def plot_attention(images, heatmaps, gates, probs, labels, path):
    """One row per face: the face, its Grad-CAM, then each block's attention gate (absolute scale 0-1,
    its range in the title); PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2 + len(gates)
    fig, axes = plt.subplots(len(images), cols, figsize=(2.0 * cols, 2.3 * len(images)), squeeze=False)
    for i, row in enumerate(axes):
        pred = int(probs[i].argmax())
        truth = f"true {CLASS_NAMES[labels[i]]}, " if labels is not None else ""
        panels = [(np.repeat(np.asarray(images[i]).reshape(IMAGE_SIZE, IMAGE_SIZE, 1), 3, -1).astype(np.uint8),
                   f"{truth}pred {CLASS_NAMES[pred]}"), (overlay(images[i], heatmaps[i]), "Grad-CAM")]
        panels += [(overlay(images[i], gate[i]), f"{name.split('_')[0]} gate {gate[i].min():.2f}-{gate[i].max():.2f}")
                   for name, gate in gates.items()]
        for ax, (picture, title) in zip(row, panels):
            ax.imshow(picture)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
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
    parser.add_argument("--attention", action="store_true",
                        help="one row per face: Grad-CAM beside each CBAM block's spatial-attention gate")
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
    if args.attention:
        gates = attention_gates(model, faces.images)
        plot_attention(faces.images, heatmaps, gates, probs, faces.labels, args.out)
        print(f"Grad-CAM of layer {layer} and the gates of {', '.join(gates)} on {len(faces)} faces written "
              f"to {args.out}")
        return 0
    plot_grid(faces.images, heatmaps, probs, faces.labels, args.out)
    print(f"Grad-CAM of layer {layer} on {len(faces)} faces written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
