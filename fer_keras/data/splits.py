"""Train / validation / test splits: by the file's Usage column, else stratified with a seed."""

import numpy as np

from fer_keras.constants import CLASS_NAMES
from fer_keras.errors import DataError

USAGE_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SPLIT_MODES = ("usage", "stratified")
SAMPLINGS = ("shuffle", "balanced")  # how training draws from its split (`fer_keras.data.pipeline`)


def split_data(data, val_fraction=0.1, seed=0, mode="usage", folds=None, fold=None):
    """`{"train", "val"[, "test"]}` -> `FERData`; no row lands in two splits.

    `mode="usage"`: Training -> train, PublicTest -> val, PrivateTest -> test. `mode="stratified"`,
    or a file without PublicTest rows: val is carved from Training, keeping `val_fraction` of every
    class (the original projects used 0.2 and 0.1), and every other row (PublicTest, PrivateTest) is
    test. `folds`/`fold`: val is fold `fold` of a stratified `folds`-fold split of Training instead,
    the rest test as well. A file without Usage is all Training.
    """
    if mode not in SPLIT_MODES:
        raise DataError(f"unknown split mode {mode!r}; choose from {', '.join(SPLIT_MODES)}")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if data.usage is None:
        training, held_out = np.arange(len(data)), np.array([], int)
    else:
        training, held_out = np.flatnonzero(data.usage == "Training"), np.flatnonzero(data.usage != "Training")
        if not len(training):
            raise DataError(f"{data.path}: no Training rows to train on")
    if folds:
        splits = _fold(data, training, folds, fold, seed)
    elif mode == "usage" and data.usage is not None and (data.usage == "PublicTest").any():
        return {name: split for usage, name in USAGE_SPLITS.items()
                if len(split := data.subset(np.flatnonzero(data.usage == usage)))}
    else:
        splits = _stratified(data, training, val_fraction, seed)
    if len(held_out):
        splits["test"] = data.subset(held_out)
    return splits


def _fold(data, rows, folds, fold, seed):
    """Train and val of fold `fold` in a stratified `folds`-fold split of `rows`."""
    from sklearn.model_selection import StratifiedKFold

    if data.labels is None:
        raise DataError(f"{data.path}: has no emotion column, so it cannot be split for training")
    if not 0 <= fold < folds:
        raise DataError(f"fold must be in 0..{folds - 1}, got {fold}")
    try:
        parts = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(rows, data.labels[rows]))
    except ValueError as exc:
        raise DataError(f"{data.path}: cannot split {len(rows)} rows into {folds} folds: {exc}") from None
    train, val = parts[fold]
    return {"train": data.subset(rows[train]), "val": data.subset(rows[val])}


def _stratified(data, rows, val_fraction, seed):
    """Split `rows` of `data` into train and val, keeping class proportions."""
    from sklearn.model_selection import train_test_split  # imported here: sklearn takes seconds to import

    if data.labels is None:
        raise DataError(f"{data.path}: has no emotion column, so it cannot be split for training")
    counts = np.bincount(data.labels[rows], minlength=len(CLASS_NAMES))
    rare = [f"{CLASS_NAMES[c]} ({n})" for c, n in enumerate(counts) if n == 1]
    if rare:
        raise DataError(f"{data.path}: a stratified split needs 2+ rows of every class present; "
                        f"only 1 of {', '.join(rare)}")
    try:
        train, val = train_test_split(rows, test_size=val_fraction, random_state=seed, stratify=data.labels[rows])
    except ValueError as exc:
        raise DataError(f"{data.path}: cannot split {len(rows)} rows with val_fraction={val_fraction}: {exc}") from None
    return {"train": data.subset(np.sort(train)), "val": data.subset(np.sort(val))}


def sample_faces(data, n, seed=0, split=None):
    """`n` random faces (seeded) of `data`, only rows whose Usage is `split` when given."""
    if split is not None:
        if data.usage is None:
            raise DataError(f"{data.path} has no Usage column: --split needs one")
        data = data.subset(np.flatnonzero(data.usage == split))
        if not len(data):
            raise DataError(f"{data.path} has no rows with Usage {split!r}")
    index = np.sort(np.random.default_rng(seed).choice(len(data), size=min(n, len(data)), replace=False))
    return data.subset(index)
