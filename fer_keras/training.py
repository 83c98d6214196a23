"""The reusable pieces of a training run (data, pipelines, compiled model), shared by
`fer_keras.train` and `tuning/` so there is a single training path."""

import math

import keras
import numpy as np
from sklearn.model_selection import train_test_split

from fer_keras.augment import build_augmenter
from fer_keras.data import class_weights, default_data, load_fer2013, make_dataset, split_data
from fer_keras.errors import FerError
from fer_keras.losses import build_loss
from fer_keras.models import build_model
from fer_keras.optim import build_optimizer


def load_splits(cfg):
    """The labelled dataset of `cfg["data"]` (synthetic default when None), cut to `cfg["limit"]`
    rows, split into train/val(/test) by Usage or by `val_fraction`."""
    path = cfg["data"] or default_data()
    data = load_fer2013(path)
    if data.labels is None:
        raise FerError(f"{path} has no emotion labels: training needs them")
    if cfg["limit"]:
        data = data.subset(stratified_sample(data, cfg["limit"], cfg["seed"]))
    return split_data(data, val_fraction=cfg["val_fraction"], seed=cfg["seed"])


def stratified_sample(data, n, seed):
    """Sorted indices of `n` rows of `data`, stratified by class and Usage (plain random when a
    stratum is too small to split)."""
    if n >= len(data):
        return np.arange(len(data))
    strata = data.labels.astype(str)
    if data.usage is not None:
        strata = np.char.add(strata, data.usage.astype(str))
    index = np.arange(len(data))
    try:
        chosen, _ = train_test_split(index, train_size=n, stratify=strata, random_state=seed)
    except ValueError:
        chosen = np.random.default_rng(seed).choice(index, n, replace=False)
    return np.sort(chosen)


def make_datasets(cfg, splits):
    """`(train_ds, val_ds, fit_kwargs)`: the training pipeline (augmentation, balanced sampling or
    class weights as configured) and the validation pipeline; pass `fit_kwargs` on to `fit`."""
    train, val = splits["train"], splits["val"]
    augment = build_augmenter(cfg["augment"], mixup=cfg["mixup"], cutmix=cfg["cutmix"], seed=cfg["seed"])
    train_ds = make_dataset(
        train.images,
        train.labels,
        batch_size=cfg["batch_size"],
        training=True,
        seed=cfg["seed"],
        augment=augment,
        sampling=cfg["sampling"],
        class_weights=class_weights(train.labels) if cfg["class_weight"] else None,
    )
    val_ds = make_dataset(val.images, val.labels, batch_size=cfg["batch_size"])
    return train_ds, val_ds, {"epochs": cfg["epochs"], "shuffle": False}  # the pipeline shuffles


def steps_per_epoch(cfg, splits):
    """Batches in one training epoch: ceil(N / batch_size) in every sampling mode, so the
    schedule is known without building the pipeline."""
    return math.ceil(len(splits["train"]) / cfg["batch_size"])


def build_compiled_model(cfg, steps_per_epoch, train_labels=None):
    """The configured architecture, compiled with its optimizer, schedule, loss and metrics.

    Sets the dtype policy first (so it also works after `keras.backend.clear_session()`).
    `train_labels` are needed only for `focal_alpha: balanced`. Metrics: accuracy and macro F1
    (`val_accuracy` and `val_f1_score` in the logs).
    """
    keras.mixed_precision.set_global_policy(cfg["precision"])
    try:
        model = build_model(cfg["model"], **cfg["model_args"])
    except (TypeError, ValueError) as exc:
        raise FerError(f"cannot build model {cfg['model']!r}: {exc}") from None
    model.compile(
        optimizer=build_optimizer(cfg, steps_per_epoch),
        loss=build_loss(cfg, train_labels),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.F1Score(average="macro", name="f1_score"),
        ],
    )
    return model
