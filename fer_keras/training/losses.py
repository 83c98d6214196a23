"""Losses on logits and one-hot labels: cross-entropy with label smoothing, or focal loss."""

import keras

from fer_keras.constants import NUM_CLASSES
from fer_keras.errors import FerError


def build_loss(cfg, train_labels=None):
    """The configured loss; `train_labels` are needed only for `focal_alpha: balanced`."""
    if cfg["loss"] == "crossentropy":
        return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg["label_smoothing"])
    return keras.losses.CategoricalFocalCrossentropy(
        from_logits=True,
        gamma=cfg["focal_gamma"],
        alpha=focal_alpha(cfg["focal_alpha"], train_labels),
        label_smoothing=cfg["label_smoothing"],
    )


def focal_alpha(alpha, train_labels=None):
    """Focal alpha as Keras takes it: a number or one weight per class.

    null means 1 (Keras' default 0.25 would quarter the loss, a hidden learning-rate change);
    "balanced" means sklearn's balanced class weights, which average 1 over the training samples,
    so the loss keeps its scale.
    """
    if alpha is None:
        return 1.0
    if alpha != "balanced":
        return alpha
    if train_labels is None:
        raise FerError("focal_alpha 'balanced' needs the training labels to weigh the classes")
    from fer_keras.data import class_weights

    weights = class_weights(train_labels)
    return [weights[c] for c in range(NUM_CLASSES)]
