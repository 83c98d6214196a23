"""Knowledge distillation (Hinton et al. 2015, https://arxiv.org/abs/1503.02531): a student learns
from targets that blend each face's label with its teachers' probabilities, so one network can
approach an ensemble's accuracy. The teachers (any models `fer_keras.inference.predictor` loads; several are an
ensemble) label the training faces once, with flip TTA, before training starts."""

import numpy as np

from fer_keras.constants import NUM_CLASSES
from fer_keras.inference.predictor import Predictor


def teacher_probabilities(paths, images, temperature=1.0, batch_size=256):
    """The teachers' mean flip-TTA probabilities (N, 7) for `images`, softened by `temperature`
    (p ** (1/T), renormalised: the softmax of logits / T for one model)."""
    probs = Predictor.load(paths, tta=True).predict_proba(images, batch_size, verbose=True).astype(np.float64)
    if temperature != 1:
        probs = np.exp(np.log(np.maximum(probs, 1e-12)) / temperature)
        probs /= probs.sum(axis=1, keepdims=True)
    return probs.astype(np.float32)


def distill_targets(labels, teacher_probs, weight):
    """Training targets: `(1 - weight) * one-hot label + weight * teacher probabilities`."""
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[np.asarray(labels)]
    return (1 - weight) * one_hot + weight * np.asarray(teacher_probs, np.float32)


def soft_targets(cfg, train):
    """The distillation targets of `cfg` (teacher, distill_weight, distill_temperature) for the
    `train` split, or None without teachers; says how often the teachers agree with the labels."""
    if not cfg["teacher"]:
        return None
    print(f"distilling from {len(cfg['teacher'])} teacher(s): {', '.join(cfg['teacher'])}")
    probs = teacher_probabilities(cfg["teacher"], train.images, cfg["distill_temperature"])
    agreement = float((probs.argmax(axis=1) == train.labels).mean())
    print(f"teachers agree with {agreement:.1%} of the training labels")
    return distill_targets(train.labels, probs, cfg["distill_weight"])
