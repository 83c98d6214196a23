"""Grad-CAM heat maps over sample faces, as a grid: where the network looks (`fer_keras.inference.gradcam`).

`python -m fer_keras.evaluation.explain [--model PATH] [--data PATH] [--n 16] --out grid.png [--split NAME]
[--layer NAME] [--seed S]`
"""

import math

from fer_keras import pretrained
from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.constants import CLASS_NAMES
from fer_keras.data import default_data, load_fer2013, sample_faces
from fer_keras.core.io import atomic_path, check_output
from fer_keras.inference.gradcam import grad_cam, overlay, target_layer
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
