"""Train / validation / test splits: by the file's Usage column, else stratified with a seed."""

import numpy as np

from fer_keras.constants import CLASS_NAMES
from fer_keras.errors import DataError

USAGE_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def split_data(data, val_fraction=0.1, seed=0, by_usage=True):
    """`{"train", "val"[, "test"]}` -> `FERData`; no row lands in two splits.

    With a Usage column (and `by_usage`): Training -> train, PublicTest -> val, PrivateTest -> test;
    a file without PublicTest rows gets its val carved from Training. Otherwise a split stratified
    by label keeps `val_fraction` of every class for val (the original projects used 0.2 and 0.1).
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if not by_usage or data.usage is None:
        return _stratified(data, np.arange(len(data)), val_fraction, seed)
    splits = {name: data.subset(np.flatnonzero(data.usage == usage)) for usage, name in USAGE_SPLITS.items()}
    if not len(splits["train"]):
        raise DataError(f"{data.path}: no Training rows to train on (use by_usage=False for a stratified split)")
    if not len(splits["val"]):
        splits.update(_stratified(data, np.flatnonzero(data.usage == "Training"), val_fraction, seed))
    return {name: split for name, split in splits.items() if len(split)}


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
