"""tf.data input pipelines over decoded FER2013 arrays, with balanced sampling; class weights for `fit`.

The pipeline casts, one-hot encodes, shuffles or samples, batches and prefetches. Image augmentation is
not here: it runs in the model's training step (`fer_keras.data.augment.Augmented`); only MixUp and
CutMix, which change labels, are applied here to training batches.
"""

import math

import numpy as np
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from fer_keras.constants import IMAGE_SHAPE, IMAGE_SIZE, NUM_CLASSES
from fer_keras.data.splits import SAMPLINGS
from fer_keras.errors import DataError, FerError


def make_dataset(
    images,
    labels,
    *,
    batch_size,
    training=False,
    seed=0,
    mix=None,
    sampling="shuffle",
    soft_labels=None,
):
    """Batched `tf.data.Dataset` of `(float32 images 0..255, one-hot float32 labels)`.

    `images`: uint8 (N, 48, 48, 1); `labels`: ints 0..6, or None to yield images only.
    `soft_labels`: (N, 7) probabilities yielded instead of the one-hot labels (distillation targets);
    `labels` still say each face's class for balanced sampling.
    Training: cache -> shuffle (seeded, new order each epoch) -> batch -> map(cast, one-hot, mix) ->
    prefetch; `sampling="balanced"` instead draws classes uniformly (like PyTorch's WeightedRandomSampler)
    for ceil(N / batch_size) batches per epoch. `mix(images, labels) -> (images, labels)` (MixUp/CutMix,
    `fer_keras.data.augment.build_mixer`) is applied only when `training=True`, so evaluation pipelines
    never see it. Sample order is reproducible for a seed (given TF's global seed); mixing draws are
    seeded, but the parallel map may hand them to batches in a different order from run to run.
    """
    images = np.asarray(images)
    if images.shape[1:] != IMAGE_SHAPE or len(images) == 0:
        size = IMAGE_SIZE
        raise DataError(f"images must have shape (N, {size}, {size}, 1), N > 0; got {images.shape}")
    if sampling not in SAMPLINGS:
        raise FerError(f"unknown sampling {sampling!r}; choose from {', '.join(SAMPLINGS)}")
    if labels is None:
        if training and (mix is not None or sampling != "shuffle"):
            raise FerError("MixUp/CutMix and balanced sampling need labels")
        source = (images,)
    else:
        labels = _check_labels(labels, len(images))
        source = (images, labels)
        if soft_labels is not None:
            source += (_check_soft_labels(soft_labels, len(images)),)
    n_batches = math.ceil(len(images) / batch_size)

    if training and sampling == "balanced":
        ds = _balanced(source, labels, seed).batch(batch_size).take(n_batches)
    elif training:
        ds = tf.data.Dataset.from_tensor_slices(source).cache()
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    else:
        ds = tf.data.Dataset.from_tensor_slices(source).batch(batch_size)

    prepare = _batch_preparer(mix if training else None)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def class_weights(labels, mode="balanced"):
    """Per-class loss weights `{class: weight}` for classes 0..6 (sklearn's compute_class_weight), as
    Keras `fit(class_weight=...)` takes them.

    "balanced" gives n_samples / (n_present_classes * count); a class absent from `labels` gets 1.0
    (it never occurs, so its weight has no effect).
    """
    if mode != "balanced":
        raise FerError(f"unknown class weight mode {mode!r}; only 'balanced' is available")
    labels = np.asarray(labels)
    if labels.size == 0:
        raise DataError("cannot compute class weights from an empty label set")
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    result = {c: 1.0 for c in range(NUM_CLASSES)}
    result.update({int(c): float(w) for c, w in zip(present, weights)})
    return result


def _check_labels(labels, n):
    """Labels as int32, checked against the image count and the class range (one_hot hides it)."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise DataError(f"labels must have shape ({n},) to match the images, got {labels.shape}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(
            f"labels must lie in 0..{NUM_CLASSES - 1}, got {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int32)


def _check_soft_labels(soft_labels, n):
    """Soft labels as float32 (N, 7) rows of probabilities: non-negative, summing to 1."""
    soft_labels = np.asarray(soft_labels, np.float32)
    if soft_labels.shape != (n, NUM_CLASSES):
        raise DataError(f"soft labels must have shape ({n}, {NUM_CLASSES}) to match the images, got {soft_labels.shape}")
    sums = soft_labels.sum(axis=1)
    bad = np.flatnonzero(~np.isfinite(sums) | (soft_labels.min(axis=1) < 0) | (np.abs(sums - 1) > 1e-3))
    if len(bad):
        raise DataError(f"soft labels must be probabilities (>= 0, summing to 1); row {bad[0]} is {soft_labels[bad[0]]}")
    return soft_labels


def _balanced(source, labels, seed):
    """Endless stream of `source` rows (image, label[, soft label]), every present class equally
    likely, new draws per epoch."""
    per_class = []
    for c in np.unique(labels):
        members = labels == c
        ds = tf.data.Dataset.from_tensor_slices(tuple(array[members] for array in source))
        ds = ds.shuffle(int(members.sum()), seed=seed + int(c), reshuffle_each_iteration=True)
        per_class.append(ds.repeat())
    return tf.data.Dataset.sample_from_datasets(
        per_class, seed=seed, rerandomize_each_iteration=True
    )


def _batch_preparer(mix):
    """Map function for a batch: cast to float, one-hot (or the soft labels), mix."""

    def prepare(images, labels=None, soft_labels=None):
        images = tf.cast(images, tf.float32)
        if labels is None:
            return images
        labels = tf.one_hot(labels, NUM_CLASSES, dtype=tf.float32) if soft_labels is None else soft_labels
        if mix is not None:
            images, labels = mix(images, labels)
        return images, labels

    return prepare
