"""Test-time augmentation views (fer_keras.inference.tta): which views each mode makes, and that they are what they say."""

import keras
import numpy as np
import pytest

from fer_keras.errors import FerError
from fer_keras.models import build_model
from fer_keras.inference.predictor import Predictor
from fer_keras.inference.tta import TTA_MODES, tta_mode, tta_views


def _dot(y, x):
    image = np.zeros((1, 48, 48, 1), np.uint8)
    image[0, y, x, 0] = 255
    return image


def _where(view):
    """(row, column) of a view's brightest pixel."""
    return np.unravel_index(np.argmax(view[0, ..., 0]), (48, 48))


@pytest.mark.parametrize("tta, count", [(None, 1), (False, 1), (True, 2), ("flip", 2), ("flip_rotate", 6)])
def test_each_mode_makes_its_views_the_faces_first(tta, count):
    faces = _dot(10, 30)
    views = tta_views(faces, tta)
    assert len(views) == count and all(view.shape == faces.shape for view in views)
    np.testing.assert_array_equal(views[0], faces)


def test_flip_mirrors_and_flip_rotate_turns_both_ways():
    faces = _dot(23, 43)  # 19.5 px right of the centre (23.5, 23.5)
    assert [_where(view) for view in tta_views(faces, "flip")] == [(23, 43), (23, 4)]
    turned = [_where(view) for view in tta_views(faces, "flip_rotate")[1:3]]
    # +-6 degrees about the centre moves the dot about 19.5 * sin(6 deg) = 2 rows, one up and one down
    assert sorted(row for row, _ in turned) == [21, 25] and all(col in (42, 43) for _, col in turned)
    mirrored = [_where(view) for view in tta_views(faces, "flip_rotate")[3:]]
    assert mirrored == [(row, 47 - col) for row, col in [(23, 43), *turned]]


def test_flip_rotate_probabilities_do_not_change_when_the_face_is_mirrored():
    keras.utils.set_random_seed(3)
    model = build_model("tiny_cnn")
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 1), dtype=np.uint8)
    faces[:, :, :20] //= 3
    for mode in TTA_MODES:  # each mode's views of the mirror are its views of the face, mirrored
        np.testing.assert_allclose(Predictor(model, tta=mode).predict_proba(faces[:, :, ::-1]),
                                   Predictor(model, tta=mode).predict_proba(faces), atol=1e-5)
    assert not np.allclose(Predictor(model, tta="flip_rotate").predict_proba(faces),
                           Predictor(model, tta="flip").predict_proba(faces), atol=1e-5)


def test_unknown_mode_is_a_user_error_naming_the_known_ones():
    assert tta_mode(True) == "flip" and tta_mode(None) is None
    with pytest.raises(FerError, match="unknown TTA mode 'rotate'; known: flip, flip_rotate"):
        tta_views(_dot(1, 1), "rotate")
