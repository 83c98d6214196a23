"""`python -m fer_keras.predict`: CSV and image inputs, face detection, TTA, ensembles, bad inputs
(also fuzzed with Hypothesis), bad models."""

import contextlib
import gzip
import io
import tempfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fer_keras.constants import CLASS_NAMES, IMAGE_SHAPE
from fer_keras.modelio.export import export_savedmodel
from fer_keras.models import build_model
from fer_keras.inference.predict import main
from fer_keras.inference.predictor import Predictor
from fer_keras.modelio.saving import load_keras_model
from fer_keras.modelio.tflite import export_tflite


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two differently initialised tiny CNNs: A as a SavedModel and a .keras file, B as .keras."""
    root = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(1)
    model_a = build_model("simple_cnn", widths=(8, 16), dense_units=(16,))
    model_a.save(root / "a.keras")
    export_savedmodel(model_a, root / "a_saved")
    keras.utils.set_random_seed(2)
    build_model("tiny_cnn").save(root / "b.keras")
    return {"saved": str(root / "a_saved"), "keras": str(root / "a.keras"), "other": str(root / "b.keras")}


def _faces(n, seed=0):
    """Random uint8 faces, darker on the left so a horizontal flip changes them."""
    images = np.random.default_rng(seed).integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)
    images[:, :, :20] //= 3
    return images


def _pixels(images):
    return [" ".join(map(str, face.ravel())) for face in images]


def _run(argv, capsys):
    """Run the CLI: (exit status, stdout, stderr)."""
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def _expected(path, images, tta=False):
    return Predictor.load(path, tta=tta).predict_proba(images)


def _assert_probabilities(table):
    probs = table[list(CLASS_NAMES)].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=1), table["emotion"])
    return probs


def test_csv_keeps_order_and_row_count(models, tmp_path, capsys):
    images = _faces(300)
    src = tmp_path / "fer2013.csv.gz"
    frame = pd.DataFrame({"emotion": np.arange(300) % 7, "pixels": _pixels(images), "Usage": "PrivateTest"})
    with gzip.open(src, "wt") as f:
        frame.to_csv(f, index=False)
    out = tmp_path / "submission.csv"
    status, _, err = _run(["--model", models["saved"], "--csv", str(src), "--out", str(out), "--probabilities",
                           "--batch-size", "64"], capsys)
    assert status == 0, err
    table = pd.read_csv(out)
    assert list(table.columns) == ["emotion", "class_name", *CLASS_NAMES]
    assert len(table) == 300
    probs = _assert_probabilities(table)
    np.testing.assert_allclose(probs, _expected(models["keras"], images), atol=1e-5)
    assert list(table["class_name"]) == [CLASS_NAMES[i] for i in table["emotion"]]


def test_pixels_only_csv_gives_kaggle_submission(models, tmp_path, capsys):
    images = _faces(20, seed=3)
    src = tmp_path / "test.csv"
    pd.DataFrame({"pixels": _pixels(images)}).to_csv(src, index=False)
    out = tmp_path / "submission.csv"
    status, _, err = _run(["--model", models["keras"], "--csv", str(src), "--out", str(out)], capsys)
    assert status == 0, err
    table = pd.read_csv(out)
    assert list(table.columns) == ["emotion"]
    np.testing.assert_array_equal(table["emotion"], _expected(models["keras"], images).argmax(axis=1))


def test_bad_csv_rows_keep_their_place_empty_and_are_reported(models, tmp_path, capsys):
    images = _faces(6, seed=4)
    pixels = _pixels(images)
    pixels[2] = " ".join(pixels[2].split()[:-5])  # file line 4, in the middle
    pixels[5] = pixels[5].replace(" ", " x ", 1)  # file line 7, the last row
    src = tmp_path / "bad.csv"
    pd.DataFrame({"emotion": [0] * 6, "pixels": pixels}).to_csv(src, index=False)
    out = tmp_path / "pred.csv"
    status, _, err = _run(["--model", models["keras"], "--csv", str(src), "--out", str(out), "--probabilities"],
                          capsys)
    assert status == 1
    reported = err.strip().splitlines()
    assert f"{src}: line 4: 2299 pixel values, expected 2304" in reported
    assert f"{src}: line 7: pixel 2 is 'x', not an integer" in reported
    table = pd.read_csv(out)
    assert len(table) == 6
    bad = table.index.isin([2, 5])
    assert table[bad].isna().all(axis=None) and table[~bad].notna().all(axis=None)
    probs = _assert_probabilities(table[~bad])
    np.testing.assert_allclose(probs, _expected(models["keras"], images[[0, 1, 3, 4]]), atol=1e-5)
    rows = out.read_text().splitlines()
    assert rows[3] == rows[6] == "," * (len(CLASS_NAMES) + 1)
    assert rows[1].split(",")[0].isdigit()  # emotion stays an integer beside the empty cells


def _write_modes(folder, face):
    """The same 48x48 face as PNG/JPEG in several sizes and modes; returns {name: exact-pixels?}."""
    gray = Image.fromarray(face[..., 0])
    gray.save(folder / "l.png")
    gray.convert("RGB").save(folder / "rgb.png")
    gray.convert("RGBA").save(folder / "rgba.png")
    gray.convert("P").save(folder / "p.png")
    Image.fromarray(face[..., 0].astype(np.uint16) * 257).save(folder / "i16.png")
    gray.resize((144, 144), Image.Resampling.NEAREST).convert("RGB").save(folder / "big.jpg", quality=95)
    gray.resize((96, 160), Image.Resampling.NEAREST).save(folder / "tall.png")
    (folder / "notes.txt").write_text("not an image, and not picked from a folder")


def test_images_of_any_size_and_mode(models, tmp_path, capsys):
    face = _faces(1, seed=5)[0]
    folder = tmp_path / "photos"
    folder.mkdir()
    _write_modes(folder, face)
    out = tmp_path / "pred.csv"
    status, _, err = _run(["--model", models["keras"], "--images", str(folder), "--out", str(out),
                           "--probabilities"], capsys)
    assert status == 0, err
    table = pd.read_csv(out)
    names = [p.split("/")[-1] for p in table["file"]]
    assert names == ["big.jpg", "i16.png", "l.png", "p.png", "rgb.png", "rgba.png", "tall.png"]
    probs = dict(zip(names, _assert_probabilities(table)))
    reference = _expected(models["keras"], face[None])[0]
    for name in ["i16.png", "l.png", "p.png", "rgb.png", "rgba.png"]:  # lossless: the very same face
        np.testing.assert_allclose(probs[name], reference, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(probs["big.jpg"], reference, atol=0.05)


def test_bad_images_are_reported_and_the_rest_predicted(models, tmp_path, capsys):
    faces = _faces(2, seed=6)
    good = tmp_path / "good.png"
    Image.fromarray(faces[0, ..., 0]).resize((100, 100)).save(good)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(faces[1, ..., 0]).resize((100, 100)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    fake = tmp_path / "fake.jpg"
    fake.write_text("this is not a JPEG")
    out = tmp_path / "pred.csv"
    status, _, err = _run(["--model", models["saved"], "--images", str(fake), str(good), str(truncated),
                           "--out", str(out)], capsys)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{fake}: cannot read image")
    assert lines[1].startswith(f"{truncated}: cannot read image")
    table = pd.read_csv(out)
    assert list(table["file"]) == [str(good)]
    assert list(table.columns) == ["file", "emotion", "class_name"]


def test_missing_files_and_empty_folders_are_reported_and_the_rest_predicted(models, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(_faces(1, seed=8)[0, ..., 0]).save(good)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images in here")
    missing = tmp_path / "missing.png"
    out = tmp_path / "pred.csv"
    status, stdout, err = _run(["--model", models["keras"], "--images", str(missing), str(good), str(empty),
                                "--out", str(out)], capsys)
    assert status == 1
    assert err.splitlines() == [f"{missing}: no such file or folder", f"{empty}: no image files in this folder"]
    assert list(pd.read_csv(out)["file"]) == [str(good)]
    assert "1 rows written" in stdout


def test_nothing_to_predict_writes_a_header_only_csv_and_exits_1(models, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "pred.csv"
    out.write_text("predictions of an earlier run\n")
    status, _, err = _run(["--model", models["keras"], "--images", str(empty), "--out", str(out)], capsys)
    assert status == 1
    assert err == f"{empty}: no image files in this folder\n"
    assert out.read_text() == "file,emotion,class_name\n"


def _foreign_savedmodel(path):
    """A valid SavedModel whose serving_default takes `x`, not `image`."""
    module = tf.Module()
    module.serve = tf.function(lambda x: {"y": x * 2}, input_signature=[tf.TensorSpec((None, 3), tf.float32, name="x")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


@pytest.mark.parametrize("case, says", [
    ("random_pb", "is not a readable SavedModel (corrupt or truncated: "),
    ("foreign", "is not a fer_keras SavedModel: it needs a serving_default signature taking float32 image"),
])
def test_bad_savedmodel_is_one_error_line(case, says, tmp_path, capsys):
    saved = tmp_path / "saved"
    if case == "random_pb":
        saved.mkdir()
        (saved / "saved_model.pb").write_bytes(np.random.default_rng(0).bytes(3000))
    else:
        _foreign_savedmodel(saved)
    image = tmp_path / "face.png"
    Image.fromarray(_faces(1)[0, ..., 0]).save(image)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(saved), "--images", str(image), "--out", str(tmp_path / "o.csv")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {saved} {says}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o.csv").exists()


@pytest.fixture(scope="module")
def tflite_model(models, tmp_path_factory):
    """Model A (see `models`) as a float32 `.tflite` file."""
    return str(export_tflite(load_keras_model(models["keras"]), tmp_path_factory.mktemp("tflite")))


def test_tflite_model_alone_and_in_a_mixed_ensemble(models, tflite_model, tmp_path, capsys):
    images = _faces(70, seed=8)
    src = tmp_path / "test.csv"
    pd.DataFrame({"pixels": _pixels(images)}).to_csv(src, index=False)
    out = tmp_path / "pred.csv"
    status, _, err = _run(["--model", tflite_model, "--csv", str(src), "--out", str(out), "--probabilities",
                           "--batch-size", "32"], capsys)  # batches of 32, 32 and 6
    assert status == 0, err
    alone = _assert_probabilities(pd.read_csv(out))
    np.testing.assert_allclose(alone, _expected(models["keras"], images), atol=1e-5)
    status, _, err = _run(["--model", tflite_model, "--model", models["other"], "--model", models["saved"], "--tta",
                           "--csv", str(src), "--out", str(out), "--probabilities"], capsys)
    assert status == 0, err
    parts = [_expected(m, images, tta=True) for m in (models["keras"], models["other"], models["saved"])]
    np.testing.assert_allclose(_assert_probabilities(pd.read_csv(out)), np.mean(parts, axis=0), atol=1e-5)


def _foreign_tflite():
    """A valid TFLite model whose serving_default takes `x`, not `image`."""
    module = tf.Module()
    module.serve = tf.function(lambda x: {"y": x * 2}, input_signature=[tf.TensorSpec((None, 3), tf.float32, name="x")])
    return tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module).convert()


@pytest.mark.parametrize("case, says", [
    ("random", "is not a readable TFLite model (corrupt or truncated: no TFLite flatbuffer identifier)"),
    ("truncated", "is not a readable TFLite model (corrupt or truncated: "),
    ("empty", "is not a readable TFLite model (corrupt or truncated: "),
    ("foreign", "is not a fer_keras TFLite model: it needs a serving_default signature taking float32 image"),
])
def test_bad_tflite_is_one_error_line(case, says, tflite_model, tmp_path, capsys):
    path = tmp_path / "model.tflite"
    content = Path(tflite_model).read_bytes()
    path.write_bytes({"random": np.random.default_rng(0).bytes(3000), "truncated": content[: len(content) // 2],
                      "empty": b"", "foreign": _foreign_tflite() if case == "foreign" else b""}[case])
    image = tmp_path / "face.png"
    Image.fromarray(_faces(1)[0, ..., 0]).save(image)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(path), "--images", str(image), "--out", str(tmp_path / "o.csv")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} {says}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o.csv").exists()


def test_tta_and_ensemble_give_valid_averaged_probabilities(models, tmp_path, capsys):
    images = _faces(10, seed=7)
    src = tmp_path / "test.csv"
    pd.DataFrame({"pixels": _pixels(images)}).to_csv(src, index=False)
    out = tmp_path / "pred.csv"
    status, _, err = _run(["--model", models["saved"], "--model", models["other"], "--tta", "--csv", str(src),
                           "--out", str(out), "--probabilities"], capsys)
    assert status == 0, err
    probs = _assert_probabilities(pd.read_csv(out))
    views = [images, images[:, :, ::-1]]
    parts = [_expected(m, view) for m in (models["keras"], models["other"]) for view in views]
    np.testing.assert_allclose(probs, np.mean(parts, axis=0), atol=1e-5)
    assert not np.allclose(parts[0], parts[1], atol=1e-4), "the flip should change this model's output"


def test_tta_flip_rotate_from_the_command_line(models, tmp_path, capsys):
    images = _faces(6, seed=9)
    src = tmp_path / "test.csv"
    pd.DataFrame({"pixels": _pixels(images)}).to_csv(src, index=False)
    out = tmp_path / "pred.csv"
    status, _, err = _run(["--model", models["keras"], "--tta", "flip_rotate", "--csv", str(src), "--out", str(out),
                           "--probabilities"], capsys)
    assert status == 0, err
    probs = _assert_probabilities(pd.read_csv(out))
    np.testing.assert_allclose(probs, _expected(models["keras"], images, tta="flip_rotate"), atol=1e-5)
    assert not np.allclose(probs, _expected(models["keras"], images, tta="flip"), atol=1e-5)
    with pytest.raises(SystemExit) as exit_info:
        main(["--tta", "rotate", "--csv", str(src), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --tta: invalid choice: 'rotate'") and len(err.splitlines()) == 1, err


def test_missing_model_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "none.keras"), "--images", str(tmp_path), "--out", str(tmp_path / "o.csv")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.fixture(scope="module")
def real_faces(real_fer2013):
    """Three real FER2013 faces the Haar cascade finds (the first rows of the file)."""
    frame = pd.read_csv(real_fer2013, nrows=10)
    return [np.array(p.split(), dtype=np.uint8).reshape(48, 48) for p in frame["pixels"].iloc[[2, 5, 9]]]


def test_detect_faces_finds_pasted_faces(real_faces, models, tmp_path, capsys):
    photo = np.full((360, 720), 120, np.uint8)
    corners = [(40, 60), (280, 150), (520, 40)]
    for (x, y), face in zip(corners, real_faces):
        photo[y : y + 144, x : x + 144] = np.asarray(Image.fromarray(face).resize((144, 144), Image.Resampling.BICUBIC))
    Image.fromarray(photo).convert("RGB").save(tmp_path / "group.jpg", quality=95)
    Image.fromarray(np.full((200, 200), 90, np.uint8)).save(tmp_path / "wall.png")
    out = tmp_path / "faces.csv"
    status, _, err = _run(["--model", models["keras"], "--images", str(tmp_path / "group.jpg"),
                           str(tmp_path / "wall.png"), "--detect-faces", "--out", str(out)], capsys)
    assert status == 1
    assert err.strip() == f"{tmp_path / 'wall.png'}: no face found"
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", "x", "y", "w", "h", "emotion", "class_name"]
    assert len(table) == 3
    for (x, y), box in zip(corners, table[["x", "y", "w", "h"]].to_numpy()):
        centre = box[:2] + box[2:] / 2
        np.testing.assert_allclose(centre, (x + 72, y + 72), atol=25)
        assert 90 <= box[2] <= 200


# --- fuzzing `--images`: any bytes give a row or a one-line report, never a traceback ---------------

def _encoded(fmt, mode, width, height, seed):
    """A small random image encoded as PNG or JPEG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


@st.composite
def image_files(draw):
    """`(bytes, valid)`: a valid tiny PNG/JPEG, one cut short (header included), or random bytes."""
    kind = draw(st.sampled_from(["valid", "truncated", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=600)), False
    fmt, mode = draw(st.sampled_from([("PNG", "L"), ("PNG", "RGBA"), ("PNG", "I;16"), ("JPEG", "RGB"), ("JPEG", "L")]))
    content = _encoded(fmt, mode, draw(st.integers(1, 60)), draw(st.integers(1, 60)), draw(st.integers(0, 9)))
    if kind == "valid":
        return content, True
    return content[: draw(st.integers(0, len(content) - 1))], False


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(image_files(), min_size=1, max_size=4), st.sampled_from([".png", ".jpg", ".bin"]))
def test_fuzzed_images_give_rows_or_one_line_reports(models, files, suffix):
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / f"{i}{suffix}" for i in range(len(files))]
        for path, (content, _) in zip(paths, files):
            path.write_bytes(content)
        out = Path(folder) / "pred.csv"
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            status = main(["--model", models["other"], "--images", *map(str, paths), "--out", str(out),
                           "--probabilities"])
        table = pd.read_csv(out)
        reported = [line.split(": ", 1)[0] for line in err.getvalue().splitlines() if ": cannot read image" in line]
        predicted = list(table["file"])
    assert sorted(predicted + reported) == sorted(map(str, paths)), "every file is predicted or reported, once"
    assert set(predicted) >= {str(path) for path, (_, valid) in zip(paths, files) if valid}
    assert status == (1 if reported else 0)
    if predicted:
        _assert_probabilities(table)
