"""PNG plots of a run: learning curves and the confusion matrix (matplotlib, no display needed)."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from fer_keras.constants import CLASS_NAMES
from fer_keras.core.io import atomic_path

_CURVES = (("loss", "Loss"), ("accuracy", "Accuracy"), ("f1_score", "F1 score"))


def plot_history(history_csv, path):
    """Train vs validation curves of loss, accuracy (and F1 when logged) from Keras' CSVLogger file.

    A resumed run may log an epoch twice; the last row of each epoch wins.
    """
    history = pd.read_csv(history_csv).drop_duplicates("epoch", keep="last")
    curves = [(key, label) for key, label in _CURVES if key in history]
    epochs = history["epoch"] + 1
    fig = Figure(figsize=(5 * len(curves), 4), layout="constrained")
    for ax, (key, label) in zip(fig.subplots(1, len(curves), squeeze=False)[0], curves):
        ax.plot(epochs, history[key], marker=".", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker=".", label="validation")
        ax.set(title=label, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_confusion_matrix(cm, path, normalize=True, title="Confusion matrix"):
    """Confusion matrix (rows = true class) with class names and every cell annotated.

    `normalize` divides each row by its count, so cells read as per-class recall.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.subplots()
    ConfusionMatrixDisplay(cm, display_labels=CLASS_NAMES).plot(
        ax=ax, cmap="Blues", values_format=".2f" if normalize else ".0f", xticks_rotation=45
    )
    ax.set_title(f"{title} (row-normalised)" if normalize else title)
    _save(fig, path)


def _save(fig, path):
    """Write `fig` as a PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
