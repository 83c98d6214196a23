"""`fer_keras.EmotionRecognizer` and `fer_keras.inference.api.annotate` on a real photo and real (small, untrained)
Keras models: every input form, ensembles and TTA, every model format, pluggable detectors, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from fer_keras import EmotionRecognizer, pretrained

from fer_keras.inference import faces
from fer_keras.inference.api import CLASS_COLORS, Face, annotate
from fer_keras.constants import CLASS_NAMES
from fer_keras.inference.detectors import iou
from fer_keras.errors import FerError, ImageError, ModelError
from fer_keras.modelio.export import export_savedmodel
from fer_keras.models import build_model
from fer_keras.inference.predictor import Predictor
from fer_keras.modelio.tflite import export_tflite

PHOTO = Path(__file__).parent / "fixtures" / "astronaut.jpg"
FACE = (133, 50, 71, 71)  # the astronaut's face in PHOTO, as drawn by hand and found by the detectors


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two differently initialised small CNNs: A as a run folder, a SavedModel and a .tflite file; B as .keras."""
    root = tmp_path_factory.mktemp("api_models")
    keras.utils.set_random_seed(1)
    model_a = build_model("simple_cnn", widths=(8, 16), dense_units=(16,))
    (root / "run").mkdir()
    model_a.save(root / "run" / "model.keras")
    export_savedmodel(model_a, root / "saved")
    tflite_file = export_tflite(model_a, root / "tflite")
    keras.utils.set_random_seed(2)
    build_model("tiny_cnn").save(root / "b.keras")
    return {"run": root / "run", "saved": root / "saved", "tflite": tflite_file, "b": root / "b.keras"}


@pytest.fixture(scope="module")
def rec(models):
    return EmotionRecognizer.load(models["run"])


@pytest.fixture(scope="module")
def photo():
    return np.asarray(Image.open(PHOTO).convert("RGB"))


def _crop_probabilities(path, gray, box, tta=False):
    """What `fer_keras.inference.predict` gives for the face `box` of `gray`: the reference for `detect`."""
    crop = faces.to_face(faces.crop_face(gray, box))[None]
    return Predictor.load(path, tta=tta).predict_proba(crop)[0]


def test_detect_gives_the_face_and_its_probabilities_for_every_input_form(rec, models, photo):
    gray = faces.rgb_to_gray(photo)
    rgba = np.concatenate([photo, np.full((*photo.shape[:2], 1), 255, np.uint8)], axis=2)
    forms = {
        "path": (str(PHOTO), "rgb"), "Path": (PHOTO, "rgb"), "rgb": (photo, "rgb"),
        "bgr": (np.ascontiguousarray(photo[..., ::-1]), "bgr"),
        "gray": (gray, "rgb"), "gray1": (gray[..., None], "rgb"),
        "rgba": (rgba, "rgb"), "bgra": (np.ascontiguousarray(rgba[..., [2, 1, 0, 3]]), "bgr"),
        "pil": (Image.open(PHOTO), "rgb"), "pil_gray": (Image.open(PHOTO).convert("L"), "rgb"),
    }
    boxes = {}
    for name, (image, color) in forms.items():
        found = rec.detect(image, color=color)
        assert len(found) == 1, name
        face = found[0]
        boxes[name] = face.box
        assert iou(face.box, FACE) > 0.6, (name, face.box)
        assert list(face.probabilities) == list(CLASS_NAMES)
        probs = np.array(list(face.probabilities.values()))
        assert face.emotion == CLASS_NAMES[probs.argmax()]
        np.testing.assert_allclose(probs, _crop_probabilities(models["run"], gray, face.box), atol=1e-5, err_msg=name)
    colour = {boxes[name] for name in forms if "gray" not in name}
    assert len(colour) == 1, f"every colour form, in either channel order, gives the same box: {boxes}"


def test_faces_come_left_to_right_and_serialise_to_json(rec, photo):
    pair = np.hstack([photo[:, ::-1], photo])  # mirrored astronaut on the left, the original on the right
    found = rec.detect(pair)
    assert len(found) == 2
    assert found[0].box[0] < found[1].box[0]
    assert iou(found[1].box, (FACE[0] + photo.shape[1], *FACE[1:])) > 0.6
    record = json.loads(json.dumps([face.to_dict() for face in found]))
    assert record[1]["box"] == list(found[1].box)
    assert record[1]["emotion"] == found[1].emotion
    assert sum(record[1]["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_no_face_gives_an_empty_list(rec):
    texture = np.random.default_rng(0).integers(100, 140, (200, 300), dtype=np.uint8)
    assert rec.detect(texture) == []


def test_classify_takes_every_face_layout_and_matches_predict(rec, models):
    batch = np.random.default_rng(3).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    batch[:, :, :20] //= 3  # darker on the left, so the flip in TTA changes the input
    expected = Predictor.load(models["run"]).predict_proba(batch[..., None])
    for layout in (batch, batch[..., None], batch.astype(np.float32), list(batch.astype(np.float64))):
        probs = rec.classify(layout)
        assert probs.shape == (5, 7) and probs.dtype == np.float32
        np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(rec.classify(batch[0]), expected[:1], atol=1e-5)
    np.testing.assert_allclose(rec.classify(batch[0, ..., None]), expected[:1], atol=1e-5)


def test_ensemble_and_tta_average_their_parts(models):
    batch = np.random.default_rng(4).integers(0, 256, (4, 48, 48, 1), dtype=np.uint8)
    batch[:, :, :20] //= 3
    parts = [Predictor.load(m).predict_proba(view)
             for m in (models["run"], models["b"]) for view in (batch, batch[:, :, ::-1])]
    assert not np.allclose(parts[0], parts[1], atol=1e-4), "the flip should change this model's output"
    ensemble = EmotionRecognizer.load([models["run"], str(models["b"])], tta=True)
    np.testing.assert_allclose(ensemble.classify(batch), np.mean(parts, axis=0), atol=1e-5)
    same = EmotionRecognizer(ensemble=[models["run"], str(models["b"])], tta=True)  # the keyword form
    np.testing.assert_allclose(same.classify(batch), np.mean(parts, axis=0), atol=1e-5)
    single = EmotionRecognizer.load(models["run"], tta=True)
    np.testing.assert_allclose(single.classify(batch), np.mean(parts[:2], axis=0), atol=1e-5)


def test_unknown_tta_mode_is_refused_when_the_recognizer_is_made(models):
    with pytest.raises(FerError, match="unknown TTA mode 'mirror'"):
        EmotionRecognizer.load(models["run"], tta="mirror")
    assert EmotionRecognizer.load(models["run"], tta=True).tta == "flip"


def test_every_model_format_gives_the_same_probabilities(models, rec):
    batch = np.random.default_rng(5).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    expected = rec.classify(batch)
    for path in (models["run"] / "model.keras", models["saved"], str(models["saved"]), models["tflite"]):
        np.testing.assert_allclose(EmotionRecognizer.load(path).classify(batch), expected, atol=1e-5)


def test_default_recognizer_loads_the_shipped_model():
    if not pretrained.cards():
        pytest.skip("no shipped model in fer_keras/pretrained yet")
    probs = EmotionRecognizer().classify(np.zeros((2, 48, 48), np.uint8))
    assert probs.shape == (2, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_a_detector_is_any_callable(models, photo):
    seen = []

    def fixed(image):
        seen.append(image.shape)
        return [np.array([10.0, 20.0, 60.0, 60.0])]

    found = EmotionRecognizer.load(models["run"], detector=fixed).detect(faces.rgb_to_gray(photo))
    assert seen == [photo.shape], "detectors get an RGB array, whatever the input form"
    assert [face.box for face in found] == [(10, 20, 60, 60)]
    expected = _crop_probabilities(models["run"], faces.rgb_to_gray(photo), (10, 20, 60, 60))
    np.testing.assert_allclose(list(found[0].probabilities.values()), expected, atol=1e-5)


@pytest.mark.parametrize(("image", "color", "message"), [
    ("missing.png", "rgb", "missing.png: cannot read image"),
    ("not_an_image.png", "rgb", "not_an_image.png: cannot read image"),
    (np.zeros((0, 0, 3), np.uint8), "rgb", "empty image"),
    (np.zeros((20, 0), np.uint8), "rgb", "empty image"),
    (np.zeros((40, 40, 3), np.float32), "rgb", "expected a uint8 image"),
    (np.zeros((40, 40, 3), np.int64), "rgb", "got dtype int64"),
    (np.zeros((40, 40, 2), np.uint8), "rgb", "got (40, 40, 2)"),
    (np.zeros((4, 40, 40, 3), np.uint8), "rgb", "expected an image of shape"),
    (np.zeros(40, np.uint8), "rgb", "expected an image of shape"),
    ([[0, 1], [2, 3]], "rgb", "got list"),
    (np.zeros((40, 40, 3), np.uint8), "hsv", "color must be 'rgb' or 'bgr'"),
])
def test_bad_images_raise_clear_errors(rec, tmp_path, monkeypatch, image, color, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not_an_image.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(FerError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        rec.detect(image, color=color)
    assert color == "hsv" or isinstance(info.value, ImageError)


@pytest.mark.parametrize(("faces48", "message"), [
    (np.zeros((0, 48, 48), np.uint8), "array is empty"),
    ([], "array is empty"),
    (np.zeros((2, 48, 48), np.int32), "got dtype int32"),
    (np.zeros((2, 48, 48), bool), "got dtype bool"),
    (np.zeros((2, 32, 32), np.uint8), r"got \(2, 32, 32\)"),
    (np.zeros((2, 48, 48, 3), np.uint8), r"got \(2, 48, 48, 3\)"),
    (np.full((1, 48, 48), 256.0), "finite values in 0-255"),
    (np.full((1, 48, 48), np.nan, np.float32), "finite values in 0-255"),
])
def test_bad_faces_raise_clear_errors(rec, faces48, message):
    with pytest.raises(ImageError, match=message):
        rec.classify(faces48)


def test_bad_models_raise_clear_errors(models, tmp_path):
    with pytest.raises(ModelError, match="none.keras: no such model file or folder"):
        EmotionRecognizer.load(tmp_path / "none.keras")
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a readable Keras model"):
        EmotionRecognizer.load([models["b"], tmp_path / "bad.keras"])
    with pytest.raises(ModelError, match="no model given"):
        EmotionRecognizer.load([])
    with pytest.raises(FerError, match="unknown face detector 'yolo'; expected one of haar"):
        EmotionRecognizer.load(models["b"], detector="yolo")


def test_annotate_draws_each_box_in_its_class_colour(photo):
    face = Face(FACE, dict(zip(CLASS_NAMES, [0.05, 0.05, 0.05, 0.6, 0.1, 0.1, 0.05])))
    original = photo.copy()
    drawn = annotate(photo, [face])
    np.testing.assert_array_equal(photo, original)  # the input is left alone
    x, y, w, h = FACE
    assert tuple(drawn[y + h // 2, x]) == CLASS_COLORS["Happy"]  # the box's left edge
    assert tuple(drawn[y + h - 1, x + w // 2]) == CLASS_COLORS["Happy"]  # its bottom edge
    changed = np.any(drawn != photo, axis=2)
    assert changed[y - 20 : y, x : x + w].mean() > 0.5  # the filled "Happy 60%" label above the box
    changed[y - 40 : y + h, x : x + w + 60] = False
    assert not changed.any(), "nothing is drawn away from the face"
    bgr_drawn = annotate(np.ascontiguousarray(photo[..., ::-1]), [face], color="bgr")
    np.testing.assert_array_equal(bgr_drawn, drawn)


def test_import_fer_keras_loads_no_tensorflow():
    code = "import sys, fer_keras; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
