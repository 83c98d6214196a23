"""The pieces of a training run (data, pipelines, compiled model) that `fer_keras.training.runner` puts
together for `fer_keras.training.train` and every tuning trial."""

import math

import keras
import numpy as np
from sklearn.model_selection import train_test_split

from fer_keras.data.augment import augmented, build_mixer
from fer_keras.training.config import DATA_ENV
from fer_keras.data import class_weights, default_data, load_fer2013, make_dataset, split_data
from fer_keras.data.stats import conflicting_rows
from fer_keras.training.distill import soft_targets
from fer_keras.errors import FerError
from fer_keras.training.losses import build_loss
from fer_keras.models import build_model
from fer_keras.training.optim import build_optimizer, schedule_callbacks
from fer_keras.training.precision import resolve_precision


def load_splits(cfg):
    """The labelled dataset of `cfg["data"]` (synthetic default when None), cut to `cfg["limit"]`
    rows, split into train/val(/test) as `split`, `val_fraction` and `folds`/`fold` say, without
    the conflicting training duplicates with `drop_conflicts` (with `overfit_check`, N training
    faces as both train and val); says which data it uses."""
    path = cfg["data"] or default_data()
    print(f"data: {path}" if cfg["data"] else
          f"data: the embedded synthetic set {path} (no --data given and ${DATA_ENV} unset)")
    data = load_fer2013(path)
    if data.labels is None:
        raise FerError(f"{path} has no emotion labels: training needs them")
    if cfg["limit"]:
        data = data.subset(stratified_sample(data, cfg["limit"], cfg["seed"]))
    splits = split_data(data, val_fraction=cfg["val_fraction"], seed=cfg["seed"], mode=cfg["split"],
                        folds=cfg["folds"], fold=cfg["fold"])
    if cfg["drop_conflicts"]:
        train = splits["train"]
        conflicting = conflicting_rows(train.images, train.labels)
        print(f"dropped {conflicting.sum()} training faces whose image repeats with another label")
        splits["train"] = train.subset(~conflicting)
    if cfg["overfit_check"]:  # train and validate on the same few faces
        train = splits["train"]
        sample = train.subset(stratified_sample(train, cfg["overfit_check"], cfg["seed"]))
        splits = {"train": sample, "val": sample}
    return splits


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
    """`(train_ds, val_ds, fit_kwargs)`: the training pipeline (MixUp/CutMix, balanced sampling or
    class weights, distillation targets as configured; image augmentation is in the model, see
    `build_compiled_model`) and the validation pipeline; pass `fit_kwargs` on to `fit`."""
    train, val = splits["train"], splits["val"]
    train_ds = make_dataset(
        train.images,
        train.labels,
        batch_size=cfg["batch_size"],
        training=True,
        seed=cfg["seed"],
        mix=build_mixer(cfg["mixup"], cfg["cutmix"], seed=cfg["seed"]),
        sampling=cfg["sampling"],
        soft_labels=soft_targets(cfg, train),
    )
    val_ds = make_dataset(val.images, val.labels, batch_size=cfg["batch_size"])
    fit_kwargs = {
        "epochs": cfg["epochs"],
        "shuffle": False,  # the pipeline shuffles
        # Keras weighs each sample by its label's argmax class, as MixUp/CutMix soft labels need.
        "class_weight": class_weights(train.labels) if cfg["class_weight"] else None,
    }
    return train_ds, val_ds, fit_kwargs


def steps_per_epoch(cfg, splits):
    """Batches in one training epoch: ceil(N / batch_size) in every sampling mode, so the
    schedule is known without building the pipeline."""
    return math.ceil(len(splits["train"]) / cfg["batch_size"])


def build_compiled_model(cfg, steps_per_epoch, train_labels=None):
    """`(model, schedule_callbacks)`: the configured architecture behind its augmentation preset
    (`fer_keras.data.augment.augmented`: active in training steps only; `network_of` gives the network
    to save) compiled with its optimizer, schedule, loss and metrics, and the callbacks its schedule
    needs during `fit` (plateau).

    Sets the dtype policy first (so it also works after `keras.backend.clear_session()`).
    `train_labels` are needed only for `focal_alpha: balanced`. Metrics: accuracy and macro F1
    (`val_accuracy` and `val_f1_score` in the logs).
    """
    keras.mixed_precision.set_global_policy(resolve_precision(cfg["precision"]))
    try:
        network = build_model(cfg["model"], **cfg["model_args"])
    except (TypeError, ValueError) as exc:
        raise FerError(f"cannot build model {cfg['model']!r}: {exc}") from None
    model = augmented(network, cfg["augment"], seed=cfg["seed"])
    model.compile(
        optimizer=build_optimizer(cfg, steps_per_epoch),
        loss=build_loss(cfg, train_labels),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.F1Score(average="macro", name="f1_score"),
        ],
    )
    return model, schedule_callbacks(cfg)
