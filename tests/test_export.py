"""SavedModel export: round trip in a process without fer_keras, string signature, bf16, CLI."""

import json
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from fer_keras.constants import CLASS_NAMES, IMAGE_SHAPE
from fer_keras.modelio.export import export_savedmodel, main
from fer_keras.models import build_model
from fer_keras.models.common import image_input, logits

# Runs in a fresh interpreter that refuses to import fer_keras: only TensorFlow serves the model.
SERVE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "fer_keras":
                raise ImportError("fer_keras must not be needed to serve")

    sys.meta_path.insert(0, Refuse())
    import tensorflow as tf

    saved, bf16_saved, work = sys.argv[1:]
    images = np.load(f"{work}/images.npy")
    pixels = open(f"{work}/pixels.txt").read().splitlines()
    bad_rows = json.load(open(f"{work}/bad_rows.json"))

    model = tf.saved_model.load(saved)
    probs = model.signatures["serving_default"](image=tf.constant(images))["probabilities"]
    by_string = model.signatures["classify_pixels"](pixels=tf.constant(pixels))
    errors = {}
    for name, row in bad_rows.items():
        try:
            model.signatures["classify_pixels"](pixels=tf.constant([pixels[0], row]))
            errors[name] = None
        except tf.errors.InvalidArgumentError as exc:
            errors[name] = exc.message
    bf16 = tf.saved_model.load(bf16_saved).signatures["serving_default"](image=tf.constant(images))
    np.savez(
        f"{work}/served.npz", probs=probs.numpy(), string_probs=by_string["probabilities"].numpy(),
        class_index=by_string["class_index"].numpy(), class_name=by_string["class_name"].numpy().astype(str),
        bf16=bf16["probabilities"].numpy(),
    )
    json.dump({
        "signatures": sorted(model.signatures), "errors": errors, "probs_dtype": probs.dtype.name,
        "bf16_dtype": bf16["probabilities"].dtype.name, "fer_keras_loaded": "fer_keras" in sys.modules,
    }, open(f"{work}/served.json", "w"))
    """
)


def _faces(n=6, seed=0):
    """Random uint8 faces, left-right asymmetric so that a flip would change the prediction."""
    images = np.random.default_rng(seed).integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)
    images[:, :, :16] //= 4
    return images


def _augmenting_model():
    """A small model with train-time-only layers (RandomFlip, Dropout, BatchNorm) to prove inference mode."""
    inputs, x = image_input()
    x = keras.layers.RandomFlip("horizontal")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, logits(x), name="augmenting")


def _pixels(images):
    """FER2013 `pixels` strings of the images."""
    return [" ".join(map(str, face.ravel())) for face in images]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Export a float32 and a bf16 model, serve both in a subprocess without fer_keras; collect results."""
    work = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    model = _augmenting_model()
    images = _faces()
    export_savedmodel(model, work / "saved")
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        bf16_model = build_model("tiny_cnn")
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    export_savedmodel(bf16_model, work / "bf16")

    pixels = _pixels(images)
    first = pixels[0].split()
    bad_rows = {
        "too_few": " ".join(first[:-1]),
        "too_many": " ".join(first + ["7"]),
        "empty": "",
        "out_of_range": " ".join(["256"] + first[1:]),
        "negative": " ".join(["-1"] + first[1:]),
        "not_a_number": " ".join(["abc"] + first[1:]),
    }
    np.save(work / "images.npy", images.astype(np.float32))
    (work / "pixels.txt").write_text("\n".join(pixels) + "\n")
    (work / "bad_rows.json").write_text(json.dumps(bad_rows))
    subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT, str(work / "saved"), str(work / "bf16"), str(work)],
        check=True, cwd=work, timeout=300,
    )
    result = json.loads((work / "served.json").read_text())
    result.update(np.load(work / "served.npz"))
    result.update(
        keras_probs=tf.nn.softmax(model(images.astype(np.float32), training=False)).numpy(),
        bf16_keras=tf.nn.softmax(tf.cast(bf16_model(images.astype(np.float32)), tf.float32)).numpy(),
        dir=work,
    )
    return result


@pytest.mark.slow
def test_savedmodel_serves_without_fer_keras_and_matches_keras(served):
    assert not served["fer_keras_loaded"]
    assert {"serving_default", "classify_pixels"} <= set(served["signatures"])
    assert served["probs_dtype"] == "float32"
    np.testing.assert_allclose(served["probs"], served["keras_probs"], atol=1e-5)


@pytest.mark.slow
def test_string_signature_equals_image_signature(served):
    np.testing.assert_allclose(served["string_probs"], served["probs"], atol=1e-6)
    expected = served["probs"].argmax(axis=1)
    np.testing.assert_array_equal(served["class_index"], expected)
    assert list(served["class_name"]) == [CLASS_NAMES[i] for i in expected]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, says",
    [("too_few", "2304"), ("too_many", "2304"), ("empty", "2304"), ("out_of_range", "0..255"),
     ("negative", "0..255"), ("not_a_number", "abc")],
)
def test_malformed_pixel_row_raises(served, name, says):
    message = served["errors"][name]
    assert message is not None, f"{name} row was served without error"
    assert says in message


@pytest.mark.slow
def test_bf16_model_serves_float32(served):
    assert served["bf16_dtype"] == "float32"
    np.testing.assert_allclose(served["bf16"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(served["bf16"], served["bf16_keras"], atol=1e-5)


def test_export_replaces_atomically_and_records_metadata(tmp_path):
    model = build_model("tiny_cnn")
    out = tmp_path / "sm"
    export_savedmodel(model, out)
    (out / "stale.txt").write_text("from the previous export")
    export_savedmodel(model, out, model_name="tiny_cnn")
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm"], "temporary folders left behind"
    meta = json.loads((out / "fer_keras.json").read_text())
    assert meta["class_names"] == list(CLASS_NAMES)
    assert meta["model_name"] == "tiny_cnn"


def test_cli_exports_a_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    build_model("tiny_cnn").save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"model": "tiny_cnn"}))
    assert main([str(run)]) == 0
    assert (run / "savedmodel" / "saved_model.pb").exists()
    assert json.loads((run / "savedmodel" / "fer_keras.json").read_text())["model_name"] == "tiny_cnn"


def test_cli_reports_missing_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nothing.keras")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")


# Exports to argv[1], killed (SIGKILL) once the SavedModel is written but before it is renamed into place.
KILLED_EXPORT = textwrap.dedent(
    """
    import os, signal, sys
    from fer_keras.modelio import export
    from fer_keras.models import build_model

    export._replace_dir = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
    export.export_savedmodel(build_model("tiny_cnn"), sys.argv[1])
    """
)


def test_export_removes_temporary_folders_of_killed_exports_only(tmp_path):
    out = tmp_path / "sm"
    done = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(out)], timeout=300)
    assert done.returncode == -signal.SIGKILL
    orphans = [p.name for p in tmp_path.iterdir()]
    assert len(orphans) == 1 and orphans[0].startswith(".sm-tmp-"), orphans
    assert (tmp_path / orphans[0] / "saved_model.pb").exists()
    kept = [".sm-tmp-1-abcd1234", ".sm-backup", ".sm-tmp-x-abcd1234", ".other-tmp-999999999-abcd1234", "sm-old"]
    for name in kept:  # pid 1 is always running; the others are not this export's temporary folders
        (tmp_path / name).mkdir()
    (tmp_path / ".sm-old-999999999-abcd1234").write_text("a file, not a folder")
    kept.append(".sm-old-999999999-abcd1234")

    export_savedmodel(build_model("tiny_cnn"), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["sm"])
    assert (out / "saved_model.pb").exists()


def test_export_refuses_to_replace_a_folder_that_is_not_a_savedmodel(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    build_model("tiny_cnn").save(run / "model.keras")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(SystemExit) as exit_info:
        main([str(run), "--out", str(tmp_path / "photos")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'photos'} holds files but is not a SavedModel: " \
                                      "not replacing it with the export\n"
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "run"]


def _run_folder(root):
    """A run folder holding an untrained tiny_cnn and a config.json without data."""
    run = root / "run"
    run.mkdir()
    build_model("tiny_cnn").save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"model": "tiny_cnn", "data": None}))
    return run


def test_cli_exports_tflite_variants_calibrated_on_training_faces(tmp_path, capsys):
    run = _run_folder(tmp_path)
    images = _faces(30, seed=3)
    csv = tmp_path / "faces.csv"
    usage = ["Training"] * 20 + ["PublicTest"] * 10
    csv.write_text("emotion,pixels,Usage\n" + "".join(f"{i % 7},{p},{u}\n" for i, (p, u) in
                                                       enumerate(zip(_pixels(images), usage))))
    out = tmp_path / "lite"
    out.mkdir()
    (out / "model-int8.tflite").write_bytes(b"an earlier export")
    assert main([str(run), "--tflite", "--quantize", "float16", "int8", "--data", str(csv), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"int8: calibrating on 20 Training faces of {csv}" in printed
    assert f"TFLite (int8) written to {out / 'model-int8.tflite'}" in printed
    assert sorted(p.name for p in out.iterdir()) == ["model-float16.tflite", "model-int8.tflite"]
    assert (out / "model-int8.tflite").read_bytes()[4:8] == b"TFL3"
    assert main([str(run), "--tflite"]) == 0  # default: float32, into the run folder
    assert (run / "model.tflite").stat().st_size > (out / "model-float16.tflite").stat().st_size
    assert not [p for p in run.iterdir() if p.name.startswith(".")], "temporary files left behind"


@pytest.mark.parametrize("argv, says", [
    (["--quantize", "int8"], "--quantize, --data and --calibration-faces go with --tflite"),
    (["--tflite", "--quantize", "int4"], "argument --quantize: invalid choice: 'int4'"),
    (["--tflite", "--calibration-faces", "0"], "--calibration-faces must be at least 1"),
])
def test_cli_rejects_bad_tflite_options_in_one_line(argv, says, tmp_path, capsys):
    run = _run_folder(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(run), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {says}") and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.keras"]
