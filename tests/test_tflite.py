"""TFLite export and serving: tiny trained runs (float32 and mixed_bfloat16) in each quantization
match their Keras models, batches of any size, inference mode, one-line errors for bad files."""

import sys
import threading
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from fer_keras.modelio import export

from fer_keras.modelio import tflite

from fer_keras.training import train
from fer_keras.constants import IMAGE_SHAPE
from fer_keras.data import default_data, load_fer2013, split_data
from fer_keras.errors import FerError
from fer_keras.models import build_model
from fer_keras.models.common import image_input, logits
from fer_keras.inference.predictor import Predictor
from fer_keras.modelio.saving import float32_model, load_keras_model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two one-epoch tiny_cnn runs on 400 synthetic faces, float32 and mixed_bfloat16, each exported by
    the CLI to every TFLite variant; plus 200 PublicTest faces and each Keras model's probabilities."""
    root = tmp_path_factory.mktemp("tflite_runs")
    faces = split_data(load_fer2013(default_data()))["val"].images[:200].astype(np.float32)
    found = {}
    for precision in ("float32", "mixed_bfloat16"):
        run = root / precision
        argv = ["--model", "tiny_cnn", "--limit", "400", "--epochs", "1", "--batch-size", "32",
                "--wandb", "disabled", "--no-export", "--out", str(run), "--precision", precision]
        assert train.main(argv) == 0
        keras.mixed_precision.set_global_policy("float32")
        assert export.main([str(run), "--tflite", "--quantize", *tflite.QUANTIZATIONS]) == 0
        model = load_keras_model(run)
        found[precision] = {
            "run": run,
            "keras": tf.nn.softmax(tf.cast(model(faces, training=False), tf.float32)).numpy(),
            "float32": tf.nn.softmax(float32_model(model)(faces, training=False)).numpy(),
        }
    return {"faces": faces, **found}


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("quantize, atol", [("none", 1e-5), ("float16", 1e-3), ("int8", 0.06)])
def test_every_variant_matches_the_keras_model(runs, precision, quantize, atol):
    run = runs[precision]
    probs = Predictor.load(run["run"] / tflite.tflite_filename(quantize)).predict_proba(runs["faces"])
    assert probs.dtype == np.float32 and probs.shape == (200, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # The same arithmetic as the model computed in float32 (a bf16 model's float32 copy) ...
    np.testing.assert_allclose(probs, run["float32"], atol=atol)
    agreement = (probs.argmax(axis=1) == run["float32"].argmax(axis=1)).mean()
    assert agreement >= (0.9 if quantize == "int8" else 0.99), agreement
    # ... and close to what the Keras model itself serves (bfloat16 for the mixed-precision run).
    np.testing.assert_allclose(probs, run["keras"], atol=max(atol, 0.02 if precision == "mixed_bfloat16" else 0))


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_quantized_files_are_smaller(runs, precision):
    size = {q: (runs[precision]["run"] / tflite.tflite_filename(q)).stat().st_size for q in tflite.QUANTIZATIONS}
    assert size["int8"] < 0.6 * size["float16"] and size["float16"] < 0.6 * size["none"], size


def test_any_batch_size_and_threads_give_the_same_probabilities(runs):
    predict = tflite.load_tflite(runs["float32"]["run"] / "model-int8.tflite")
    faces = runs["faces"][:13]
    whole = predict(faces)
    one_by_one = np.concatenate([predict(faces[i : i + 1]) for i in range(len(faces))])
    np.testing.assert_array_equal(one_by_one, whole)
    np.testing.assert_array_equal(np.concatenate([predict(faces[:5]), predict(faces[5:])]), whole)
    assert predict(faces[:0]).shape == (0, 7)
    results = [None] * 4

    def work(i):
        results[i] = [predict(faces[j : j + 1 + i]) for j in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, got in enumerate(results):
        for j, probs in enumerate(got):
            np.testing.assert_array_equal(probs, whole[j : j + 1 + i])


def test_augmentation_is_off_and_normalisation_inside(tmp_path):
    """A RandomFlip in the model stays off in the file; 0-255 faces go in unnormalised."""
    inputs, x = image_input()
    x = keras.layers.RandomFlip("horizontal")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.5)(x)
    model = keras.Model(inputs, logits(keras.layers.Flatten()(x)))
    faces = np.random.default_rng(0).integers(0, 256, (32, *IMAGE_SHAPE)).astype(np.float32)
    faces[:, :, :16] /= 4  # left-right asymmetric: a flip would change the prediction
    path = tflite.export_tflite(model, tmp_path)
    assert path == tmp_path / "model.tflite"
    expected = tf.nn.softmax(model(faces, training=False)).numpy()
    np.testing.assert_allclose(Predictor.load(path).predict_proba(faces), expected, atol=1e-5)


def test_loading_raises_no_deprecation_warning(runs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Predictor.load(runs["float32"]["run"] / "model.tflite")


def test_int8_needs_calibration_faces():
    with pytest.raises(FerError, match="calibration"):
        tflite.convert(build_model("tiny_cnn"), "int8")
    with pytest.raises(FerError, match="unknown quantization 'int4'"):
        tflite.convert(build_model("tiny_cnn"), "int4")


def test_a_tflite_file_without_the_suffix_is_recognised(runs, tmp_path):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes((runs["float32"]["run"] / "model.tflite").read_bytes())
    assert tflite.is_tflite(renamed) and not tflite.is_tflite(runs["float32"]["run"] / "model.keras")
    np.testing.assert_array_equal(Predictor.load(renamed).predict_proba(runs["faces"][:3]),
                                  Predictor.load(runs["float32"]["run"] / "model.tflite").predict_proba(runs["faces"][:3]))


def test_without_litert_tf_lite_interpreter_serves_without_warning(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert tflite.interpreter_class() is tf.lite.Interpreter
    path = runs["float32"]["run"] / "model-int8.tflite"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probs = Predictor.load(path).predict_proba(runs["faces"][:5])
    monkeypatch.undo()
    np.testing.assert_allclose(probs, Predictor.load(path).predict_proba(runs["faces"][:5]), atol=1e-6)
