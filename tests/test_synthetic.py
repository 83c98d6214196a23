"""The synthetic FER-like default dataset: shape, imbalance, splits, determinism, caching."""

import numpy as np
import pytest

from fer_keras.constants import NUM_CLASSES
from fer_keras.data import default_data, load_fer2013
from fer_keras.data.synthetic import TRAINING_COUNTS, class_counts, draw, generate, write_synthetic_csv
from fer_keras.errors import FerError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_KERAS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def faces():
    return generate(700, seed=0)


def test_shapes_and_types(faces):
    images, labels, usage = faces
    assert images.shape == (700, 48, 48, 1) and images.dtype == np.uint8
    assert labels.shape == (700,) and labels.dtype == np.int64 and set(labels) == set(range(NUM_CLASSES))
    assert 40 < images.mean() < 215 and images.std() > 20


def test_imbalance_follows_fer2013(faces):
    counts = np.bincount(faces[1], minlength=NUM_CLASSES)
    np.testing.assert_allclose(counts / counts.sum(), TRAINING_COUNTS / TRAINING_COUNTS.sum(), atol=0.01)
    assert counts.argmax() == 3 and counts.argmin() == 1  # Happy most, Disgust least
    assert class_counts(20).min() >= 1 and class_counts(20).sum() == 20
    with pytest.raises(FerError, match="at least 7 faces"):
        class_counts(6)


def test_usage_is_about_80_10_10_within_every_class(faces):
    _, labels, usage = faces
    for c in range(NUM_CLASSES):
        rows = labels == c
        assert abs((usage[rows] == "Training").mean() - 0.8) < 0.1
        assert (usage[rows] == "PublicTest").any() and (usage[rows] == "PrivateTest").any()


def test_expression_changes_only_the_face_features():
    """Same faces drawn Happy and Sad: they differ at brows/eyes and mouth, not in the background."""
    happy = draw(np.full(200, 3), np.random.default_rng(0)).astype(float)
    sad = draw(np.full(200, 4), np.random.default_rng(0)).astype(float)
    diff = np.abs(happy - sad).mean(axis=0)
    assert diff[33:45, 12:36].mean() > 8 and diff[9:18, 6:42].mean() > 4  # mouth; brows and eyes
    assert diff[:5].mean() < 1 and diff[:, :3].mean() < 1


def test_deterministic_per_seed(faces):
    again = generate(700, seed=0)
    for a, b in zip(faces, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(generate(700, seed=1)[0], faces[0])


def test_faces_vary_within_a_class(faces):
    images, labels, _ = faces
    neutral = images[labels == 6].reshape(-1, 48 * 48).astype(float)
    assert np.linalg.norm(neutral - neutral.mean(0), axis=1).min() > 100


def test_written_csv_reads_back(tmp_path):
    path = write_synthetic_csv(tmp_path / "syn.csv.gz", n=60, seed=5)
    data = load_fer2013(path)
    images, labels, usage = generate(60, seed=5)
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    np.testing.assert_array_equal(data.usage, usage)


def test_default_data_is_generated_once(tmp_path):
    path = default_data(n=80, seed=1)
    assert path.exists() and str(path).startswith(str(tmp_path / "cache"))
    mtime = path.stat().st_mtime_ns
    assert default_data(n=80, seed=1) == path and path.stat().st_mtime_ns == mtime
    assert default_data(n=80, seed=2) != path
    assert len(load_fer2013(path)) == 80
