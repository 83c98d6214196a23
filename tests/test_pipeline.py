"""tf.data pipeline: shapes, order, seeded shuffles, balanced sampling, class and sample weights,
soft (distillation) labels."""

import math

import numpy as np
import tensorflow as tf
import pytest

from fer_keras.data.pipeline import class_weights, make_dataset
from fer_keras.errors import DataError, FerError

COUNTS = (60, 3, 20, 80, 30, 12, 25)  # FER2013-like imbalance, 230 images


@pytest.fixture
def data():
    """Images whose every pixel holds the sample's index (mod 256), so order is readable back."""
    labels = np.repeat(np.arange(7), COUNTS)
    np.random.default_rng(0).shuffle(labels)
    index = np.arange(len(labels))
    pixels = (index % 256).astype(np.uint8)[:, None, None, None]
    images = np.broadcast_to(pixels, (len(labels), 48, 48, 1))
    return np.ascontiguousarray(images), labels


def ids(batches):
    """Sample indices of an epoch, read back from the pixel values."""
    return np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in batches]).astype(int)


def classes(batches):
    return np.concatenate([b[1].numpy().argmax(axis=1) for b in batches])


def test_eval_batches_shapes_one_hot_and_order(data):
    images, labels = data
    batches = list(make_dataset(images, labels, batch_size=64))
    assert len(batches) == math.ceil(len(labels) / 64)
    x, y = batches[0]
    assert x.dtype.name == "float32" and y.dtype.name == "float32"
    assert x.shape == (64, 48, 48, 1) and y.shape == (64, 7)
    assert batches[-1][0].shape[0] == len(labels) - 3 * 64
    np.testing.assert_array_equal(ids(batches), np.arange(len(labels)))
    one_hot = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(one_hot, np.eye(7)[labels])
    assert float(np.concatenate([b[0].numpy() for b in batches]).max()) == len(labels) - 1  # 0..255


def test_pixels_only_yields_images(data):
    images, _ = data
    batches = list(make_dataset(images, None, batch_size=100))
    assert [tuple(b.shape) for b in batches] == [(n, 48, 48, 1) for n in (100, 100, 30)]
    assert batches[0].dtype.name == "float32"


def test_training_shuffle_is_seeded_and_reshuffles_each_epoch(data):
    images, labels = data
    ds = make_dataset(images, labels, batch_size=32, training=True, seed=7)
    assert int(ds.cardinality()) == math.ceil(len(labels) / 32)  # steps_per_epoch for schedules
    epoch1, epoch2 = ids(ds), ids(ds)
    assert sorted(epoch1) == sorted(epoch2) == list(range(len(labels)))
    assert not np.array_equal(epoch1, epoch2)
    again = make_dataset(images, labels, batch_size=32, training=True, seed=7)
    np.testing.assert_array_equal(ids(again), epoch1)
    np.testing.assert_array_equal(ids(again), epoch2)
    other = make_dataset(images, labels, batch_size=32, training=True, seed=8)
    assert not np.array_equal(ids(other), epoch1)
    batches = list(make_dataset(images, labels, batch_size=32, training=True, seed=7))
    np.testing.assert_array_equal(classes(batches), labels[ids(batches)])  # pairs stay together


def test_balanced_sampling_is_uniform_finite_and_seeded(data):
    images, labels = data
    ds = make_dataset(images, labels, batch_size=64, training=True, seed=1, sampling="balanced")
    epochs = [list(ds) for _ in range(8)]
    assert {len(e) for e in epochs} == {math.ceil(len(labels) / 64)} == {int(ds.cardinality())}
    drawn = np.concatenate([classes(e) for e in epochs])
    freq = np.bincount(drawn, minlength=7) / len(drawn)
    assert np.abs(freq - 1 / 7).max() < 0.025, freq
    expected = len(drawn) / 7
    chi2 = ((np.bincount(drawn, minlength=7) - expected) ** 2 / expected).sum()
    assert chi2 < 16.81  # chi-square critical value, 6 degrees of freedom, p = 0.01
    assert np.abs(np.bincount(labels) / len(labels) - 1 / 7).max() > 0.2  # the source is imbalanced
    for e in epochs[:2]:  # every drawn pair is a real (image, label) pair
        np.testing.assert_array_equal(classes(e), labels[ids(e)])
    assert not np.array_equal(ids(epochs[0]), ids(epochs[1]))
    again = make_dataset(images, labels, batch_size=64, training=True, seed=1, sampling="balanced")
    np.testing.assert_array_equal(ids(again), ids(epochs[0]))


def test_balanced_sampling_skips_absent_classes(data):
    images, labels = data
    keep = labels != 1
    ds = make_dataset(images[keep], labels[keep], batch_size=50, training=True, sampling="balanced")
    drawn = classes(list(ds))
    assert 1 not in drawn and set(drawn) == {0, 2, 3, 4, 5, 6}


def test_class_weights_balanced_formula(data):
    _, labels = data
    weights = class_weights(labels)
    assert list(weights) == list(range(7))
    for c, count in enumerate(COUNTS):
        assert weights[c] == pytest.approx(len(labels) / (7 * count))
    assert weights[1] > weights[0] > weights[3]
    partial = class_weights(labels[labels != 1])
    assert partial[1] == 1.0
    assert partial[0] == pytest.approx((len(labels) - 3) / (6 * COUNTS[0]))
    with pytest.raises(FerError, match="class weight mode"):
        class_weights(labels, mode="sqrt")


def test_keras_class_weight_equals_the_argmax_weight_table(data):
    """`fit(class_weight=...)` (what training passes) trains exactly as per-sample weights of each
    label's argmax class, soft MixUp-like labels included."""
    import keras

    from fer_keras.models import build_model

    images, labels = data
    weights = class_weights(labels)
    table = np.array([weights[c] for c in range(7)], dtype=np.float32)
    ds = make_dataset(images, labels, batch_size=64).map(soft_labels)
    with_table = ds.map(lambda x, y: (x, y, tf.gather(table, tf.argmax(y, axis=-1))))
    trained = []
    for fit_data, class_weight in [(ds, weights), (with_table, None)]:
        keras.utils.set_random_seed(0)
        model = build_model("tiny_cnn", widths=[4])
        model.compile(keras.optimizers.SGD(0.01), keras.losses.CategoricalCrossentropy(from_logits=True))
        model.fit(fit_data, epochs=1, class_weight=class_weight, verbose=0, shuffle=False)
        trained.append(model.get_weights())
    for a, b in zip(*trained):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def soft_labels(images, labels):
    """A stand-in label mixer: moves 30% of each label's mass to class 0."""
    return 255.0 - images, 0.7 * labels + 0.3 * np.eye(7, dtype=np.float32)[0]


def test_mix_applies_only_in_training(data):
    images, labels = data
    def pixels(training):
        ds = make_dataset(images, labels, batch_size=64, training=training, mix=soft_labels)
        return np.concatenate([x.numpy() for x, _ in ds])

    np.testing.assert_array_equal(pixels(training=False), images.astype(np.float32))
    x_train = pixels(training=True)
    assert np.array_equal(np.sort(255.0 - x_train[:, 0, 0, 0]), np.arange(len(labels)))


def teacher_like(labels):
    """Soft labels whose row i puts 0.6 on its label and 0.4 on class (label + 1) mod 7."""
    return (0.6 * np.eye(7)[labels] + 0.4 * np.eye(7)[(labels + 1) % 7]).astype(np.float32)


@pytest.mark.parametrize("sampling", ["shuffle", "balanced"])
def test_soft_labels_replace_the_one_hot_labels_in_training(data, sampling):
    images, labels = data
    soft = teacher_like(labels)
    ds = make_dataset(images, labels, batch_size=32, training=True, seed=3, sampling=sampling, soft_labels=soft)
    batches = list(ds)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), soft[ids(batches)])
    # A mixer gets the soft labels to mix further.
    mixed = make_dataset(images, labels, batch_size=32, training=True, mix=soft_labels, soft_labels=soft)
    x, y = next(iter(mixed))
    np.testing.assert_allclose(y.numpy(), 0.7 * soft[(255 - x.numpy()[:, 0, 0, 0]).astype(int)]
                               + 0.3 * np.eye(7)[0], rtol=1e-6)


@pytest.mark.parametrize(
    "soft, message",
    [
        (np.full((230, 6), 1 / 6), r"soft labels must have shape \(230, 7\)"),
        (np.full((230, 7), 0.5), r"summing to 1\); row 0"),
        (np.where(np.arange(7) == 0, 1.5, -0.5 / 6) * np.ones((230, 1)), ">= 0"),
    ],
)
def test_bad_soft_labels_raise_one_clear_error(data, soft, message):
    images, labels = data
    with pytest.raises(DataError, match=message):
        make_dataset(images, labels, batch_size=8, training=True, soft_labels=soft)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"labels": np.full(230, 7)}, DataError, "labels must lie in 0..6"),
        ({"labels": np.zeros(10, int)}, DataError, r"labels must have shape \(230,\)"),
        ({"images": np.zeros((230, 48, 48), np.uint8)}, DataError, r"shape \(N, 48, 48, 1\)"),
        ({"images": np.zeros((0, 48, 48, 1), np.uint8), "labels": None}, DataError, "N > 0"),
        ({"sampling": "weighted"}, FerError, "unknown sampling"),
        ({"labels": None, "training": True, "sampling": "balanced"}, FerError, "need labels"),
    ],
)
def test_bad_arguments_raise_clear_errors(data, kwargs, error, message):
    images, labels = data
    args = {"images": images, "labels": labels, **kwargs}
    with pytest.raises(error, match=message):
        make_dataset(args.pop("images"), args.pop("labels"), batch_size=8, **args)
