"""TFLite (LiteRT) export and serving: `model.tflite`, `model-float16.tflite`, `model-int8.tflite`.

A `.tflite` file holds one signature, `serving_default`: float32 `image` [N, 48, 48, 1] in 0..255 ->
float32 `probabilities` [N, 7]. Normalisation is inside (the model's Rescaling layer), augmentation
is not (the model is traced with `training=False`), and a model trained under `mixed_bfloat16` is
converted from a float32 copy, so every variant computes and returns float32.

- `none`: float32 weights and arithmetic.
- `float16`: float16 weights (half the size), dequantised to float32 when the file is loaded.
- `int8`: full-integer quantisation (int8 weights and activations, XNNPACK's int8 kernels), calibrated
  on a sample of Training faces; input and output stay float32, so every variant is used the same way.

Files are converted with TensorFlow's `tf.lite.TFLiteConverter` and run with LiteRT's interpreter
(`ai_edge_litert`, which replaces the deprecated `tf.lite.Interpreter`); where `ai-edge-litert` is not
installed, `tf.lite.Interpreter` serves instead.
"""

import tempfile
import threading
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fer_keras.constants import IMAGE_SHAPE, NUM_CLASSES
from fer_keras.errors import FerError, ModelError
from fer_keras.core.io import atomic_path, check_output
from fer_keras.modelio.saving import float32_model, short_reason

QUANTIZATIONS = ("none", "float16", "int8")
SIGNATURE = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
SUFFIX = ".tflite"
CALIBRATION_FACES = 500
_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, bytes 4..8 of every .tflite file


def tflite_filename(quantize="none"):
    """`model.tflite`, `model-float16.tflite` or `model-int8.tflite`."""
    _check_quantize(quantize)
    return f"model{'' if quantize == 'none' else '-' + quantize}{SUFFIX}"


def _check_quantize(quantize):
    if quantize not in QUANTIZATIONS:
        raise FerError(f"unknown quantization {quantize!r}: choose one of {', '.join(QUANTIZATIONS)}")


# --- conversion ---------------------------------------------------------------------------------

def convert(model, quantize="none", calibration=None):
    """The `.tflite` file's bytes for a Keras model (0-255 faces in, logits out).

    `calibration`: uint8 or float faces (N, 48, 48, 1) in 0..255, needed for `int8` (a few hundred
    Training faces: they set the activations' ranges).
    """
    _check_quantize(quantize)
    if quantize == "int8" and (calibration is None or not len(calibration)):
        raise FerError("int8 quantization needs calibration faces (a sample of Training)")
    model = float32_model(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE,
        lambda image: {OUTPUT_NAME: tf.nn.softmax(tf.cast(model(image, training=False), tf.float32))},
        input_signature=[tf.TensorSpec((None, *IMAGE_SHAPE), tf.float32, name=INPUT_NAME)],
    )
    with tempfile.TemporaryDirectory(prefix="fer-tflite-") as saved:
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[SIGNATURE])
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            faces = np.asarray(calibration, np.float32)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([face[None]] for face in faces)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        try:
            return converter.convert()
        except Exception as exc:  # noqa: BLE001  (ConverterError and friends: ops TFLite lacks)
            raise FerError(f"cannot convert {model.name} to TFLite ({quantize}): {short_reason(exc)}") from None


def export_tflite(model, out_dir, quantize="none", calibration=None):
    """Write `<out_dir>/model[-float16|-int8].tflite` atomically (replacing an earlier one); its path."""
    out_dir = check_output(out_dir, folder=True)
    path = out_dir / tflite_filename(quantize)
    content = convert(model, quantize, calibration)
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)
    return path


def calibration_faces(data_path=None, n=CALIBRATION_FACES, seed=0):
    """`n` random Training faces (seeded) of a FER2013 CSV (the synthetic default set when None),
    uint8 (n, 48, 48, 1): int8 calibration. Files without a Usage column use all rows."""
    from fer_keras.data import default_data, load_fer2013

    data = load_fer2013(data_path or default_data(), skip_bad=True)
    if data.usage is not None and (data.usage == "Training").any():
        data = data.subset(np.flatnonzero(data.usage == "Training"))
    index = np.random.default_rng(seed).choice(len(data), size=min(n, len(data)), replace=False)
    return data.images[np.sort(index)]


# --- serving ------------------------------------------------------------------------------------

def is_tflite(path):
    """Whether `path` names a TFLite file: a `.tflite` name, or a file carrying the TFL3 identifier."""
    path = Path(path)
    if path.suffix.lower() == SUFFIX:
        return True
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == _IDENTIFIER
    except OSError:
        return False


def interpreter_class():
    """LiteRT's Interpreter, or TensorFlow's deprecated one where `ai-edge-litert` is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated", category=UserWarning)
        Interpreter = tf.lite.Interpreter  # noqa: N806
    return Interpreter


def load_tflite(path, num_threads=None):
    """A function float32 faces (N, 48, 48, 1) in 0..255 -> float32 probabilities (N, 7) serving a
    `.tflite` file written by `export_tflite`. Any N: the input is resized when N changes (so a
    steady batch size, or one face at a time, never reallocates). Thread-safe (one call at a time).
    Rows are renormalised to sum to 1 (int8's quantised softmax sums to 1 +- 0.01).

    A file that is not a TFLite model, or not one of fer_keras's, is a ModelError naming it.
    """
    path = Path(path)
    content = path.read_bytes()  # OSError (missing, unreadable) names the file itself
    if content[4:8] != _IDENTIFIER:
        raise _unreadable(path, "no TFLite flatbuffer identifier")
    try:
        interpreter = interpreter_class()(model_content=content, num_threads=num_threads)
        signatures = interpreter.get_signature_list()
    except Exception as exc:  # noqa: BLE001  (the flatbuffer verifier and op resolver raise ValueError/RuntimeError)
        raise _unreadable(path, short_reason(exc)) from None
    found = signatures.get(SIGNATURE, {})
    if found.get("inputs") != [INPUT_NAME] or found.get("outputs") != [OUTPUT_NAME]:
        shown = ", ".join(f"{name}({', '.join(sig['inputs'])})" for name, sig in signatures.items()) or "none"
        raise ModelError(f"{path} is not a fer_keras TFLite model: it needs a {SIGNATURE} signature taking "
                       f"float32 {INPUT_NAME} [N, 48, 48, 1] and returning {OUTPUT_NAME} [N, {NUM_CLASSES}] "
                       f"(signatures: {shown})")
    runner = interpreter.get_signature_runner(SIGNATURE)
    source = runner.get_input_details()[INPUT_NAME]
    target = runner.get_output_details()[OUTPUT_NAME]
    if (source["dtype"] != np.float32 or tuple(source["shape_signature"][1:]) != IMAGE_SHAPE
            or target["dtype"] != np.float32 or tuple(target["shape_signature"][1:]) != (NUM_CLASSES,)):
        raise ModelError(f"{path} is not a fer_keras TFLite model: its {SIGNATURE} signature takes "
                       f"{np.dtype(source['dtype']).name} {list(source['shape_signature'])} and returns "
                       f"{np.dtype(target['dtype']).name} {list(target['shape_signature'])}; it needs "
                       f"float32 [-1, 48, 48, 1] -> float32 [-1, {NUM_CLASSES}]")
    return _Runner(interpreter, source["index"], target["index"])


class _Runner:
    """Calls an interpreter on batches of faces, resizing its input only when the batch size changes."""

    def __init__(self, interpreter, source, target):
        self._interpreter, self._source, self._target = interpreter, source, target
        self._batch = None
        self._lock = threading.Lock()

    def __call__(self, images):
        images = np.ascontiguousarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
            raise FerError(f"faces must be float32 [N, 48, 48, 1]; got shape {list(images.shape)}")
        if not len(images):
            return np.zeros((0, NUM_CLASSES), np.float32)
        with self._lock:
            if self._batch != len(images):
                self._interpreter.resize_tensor_input(self._source, images.shape, strict=True)
                self._interpreter.allocate_tensors()
                self._batch = len(images)
            self._interpreter.set_tensor(self._source, images)
            self._interpreter.invoke()
            probs = self._interpreter.get_tensor(self._target).copy()
        return probs / probs.sum(axis=1, keepdims=True)  # int8's softmax comes in steps of 1/256


def _unreadable(path, reason):
    return ModelError(f"{path} is not a readable TFLite model (corrupt or truncated: {reason})")
