"""PNG charts of a dataset: class counts per split, and a grid of sample faces per class."""

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

from fer_keras.constants import CLASS_NAMES, NUM_CLASSES
from fer_keras.data.stats import split_names, split_rows
from fer_keras.core.io import atomic_path


def plot_class_distribution(data, path):
    """Grouped bar chart of rows per class, one bar per split, written to `path`."""
    splits = split_names(data)
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    width = 0.8 / len(splits)
    for i, name in enumerate(splits):
        counts = np.bincount(data.labels[split_rows(data, name)], minlength=NUM_CLASSES)
        bars = ax.bar(np.arange(NUM_CLASSES) + (i - (len(splits) - 1) / 2) * width, counts, width, label=name)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(np.arange(NUM_CLASSES), CLASS_NAMES)
    ax.set_ylabel("rows")
    ax.set_title("Class distribution")
    ax.legend()
    _save(fig, path)


def plot_samples(data, path, per_class=8, seed=0):
    """Grid of `per_class` random faces (columns) for every class (rows), written to `path`."""
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(per_class * 0.9 + 0.8, NUM_CLASSES * 0.95))
    axes = fig.subplots(NUM_CLASSES, per_class, squeeze=False)
    for c, row in enumerate(axes):
        rows = np.flatnonzero(data.labels == c)
        picks = rng.choice(rows, min(per_class, len(rows)), replace=False) if len(rows) else []
        for ax, i in zip(row, list(picks) + [None] * per_class):
            if i is not None:
                ax.imshow(data.images[i, :, :, 0], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(CLASS_NAMES[c], rotation=0, ha="right", va="center")
    fig.suptitle("Sample faces per class")
    _save(fig, path)


def _save(fig, path):
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
