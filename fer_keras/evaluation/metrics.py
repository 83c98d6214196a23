"""Classification metrics of one split, computed with scikit-learn over the 7 FER classes."""

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)

from fer_keras.constants import CLASS_NAMES, NUM_CLASSES

_LABELS = list(range(NUM_CLASSES))


def compute_metrics(y_true, probs, loss=None):
    """Accuracy, loss, macro and per-class precision/recall/F1, confusion matrix and report.

    `y_true` holds integer labels (N,), `probs` class probabilities (N, 7). `loss` defaults to the
    categorical cross-entropy of `probs`. Every class counts, present or not (as Keras' F1Score
    does): a class absent from `y_true` and never predicted scores 0 and lowers the macro means.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows miss 1 by ~1e-7
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=_LABELS, zero_division=0
    )
    if loss is None:
        loss = log_loss(y_true, probs, labels=_LABELS)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "loss": float(loss),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=_LABELS).tolist(),
        "report": classification_report(
            y_true, y_pred, labels=_LABELS, target_names=CLASS_NAMES, digits=4, zero_division=0
        ),
    }


def train_val_gap(results):
    """Train minus validation accuracy (the overfitting indicator), or None without both splits."""
    if "train" in results and "val" in results:
        return results["train"]["accuracy"] - results["val"]["accuracy"]
    return None
