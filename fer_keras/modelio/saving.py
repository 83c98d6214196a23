"""Finding and loading a run's models: a `.keras` file (or a run folder holding `model.keras`), and a
SavedModel folder written by `fer_keras.modelio.export`. A file that cannot be loaded, or a model that does not
map 48x48x1 faces to 7 classes, is a ModelError naming it.
`float32_model` gives a bf16-trained model's float32 twin (for shipping and TFLite)."""

import zipfile
from pathlib import Path

import keras
import tensorflow as tf

import fer_keras.models  # noqa: F401  (registers the zoo's custom layers for loading .keras files)
from fer_keras.constants import IMAGE_SHAPE, NUM_CLASSES
from fer_keras.core.runs import MODEL_FILE
from fer_keras.errors import ModelError

SERVING_SIGNATURE = "serving_default"


def resolve_model_file(path):
    """The `.keras` file named by `path`: the file itself or a run folder's `model.keras`."""
    path = Path(path)
    if path.is_dir():
        if is_savedmodel(path):
            raise ModelError(f"{path} is a SavedModel; this needs the Keras model (.keras file or run folder)")
        if not (path / MODEL_FILE).exists():
            raise ModelError(f"no model at {path / MODEL_FILE}: {path} is not a run folder holding {MODEL_FILE}, "
                             "a SavedModel or a .tflite file")
        path = path / MODEL_FILE
    if not path.exists():
        raise ModelError(f"no model at {path}")
    if path.suffix != ".keras":
        raise ModelError(f"{path}: expected a .keras file or a run folder holding {MODEL_FILE}")
    return path


def load_keras_model(path):
    """Load a `.keras` model (or a run folder's) in Keras' safe mode; importing fer_keras.models
    registered its custom layers. A corrupt file, one holding Python code, or a model that does not map
    faces (N, 48, 48, 1) to 7 classes is a ModelError."""
    path = resolve_model_file(path)
    if not zipfile.is_zipfile(path):  # Keras would call this "File not found"
        raise _unreadable(path, "not a zip archive")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001  (zip, JSON, HDF5 and config errors all mean a bad file)
        if "safe_mode=False" in str(exc):
            raise ModelError(f"{path} holds Python code (a Lambda layer) and is not loaded in safe mode, which "
                           "fer_keras always uses; rebuild the model without Lambda layers") from None
        raise _unreadable(path, short_reason(exc)) from None
    check_model_shapes(model, path)
    return model


def check_model_shapes(model, where):
    """ModelError naming `where` unless `model` takes faces (N, 48, 48, 1) and returns (N, 7)."""
    try:
        inputs, outputs = model.input_shape, model.output_shape
    except (AttributeError, ValueError):  # a subclassed model never called has no shapes
        raise ModelError(f"{where}: the model has no defined input and output shapes") from None
    if not (isinstance(inputs, tuple) and tuple(inputs[1:]) == IMAGE_SHAPE
            and isinstance(outputs, tuple) and tuple(outputs[1:]) == (NUM_CLASSES,)):
        raise ModelError(f"{where} is not a fer_keras model: it maps {_shape(inputs)} to {_shape(outputs)}; "
                         f"a model must map faces [N, 48, 48, 1] to [N, {NUM_CLASSES}] class scores")


def _shape(shape):
    """A Keras shape (None for the batch) as `[N, 48, 48, 1]`; nested shapes as Keras gives them."""
    if not isinstance(shape, tuple):
        return str(shape)
    return "[" + ", ".join("N" if v is None else str(v) for v in shape) + "]"


def _unreadable(path, reason):
    return ModelError(f"{path} is not a readable Keras model file (corrupt or truncated: {reason})")


def short_reason(exc, limit=160):
    """The first line of an exception's message, at most `limit` characters."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_savedmodel(path):
    """The `serving_default` function of a SavedModel folder written by `fer_keras.modelio.export`: float32
    images (N, 48, 48, 1) as `image` -> {"probabilities": (N, 7)}. Loading runs the SavedModel's own graph."""
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001  (protobuf, tag and graph errors all mean a bad folder)
        raise ModelError(f"{path} is not a readable SavedModel (corrupt or truncated: {short_reason(exc)})") from None
    serve = loaded.signatures.get(SERVING_SIGNATURE)
    if serve is None or not _serves_faces(serve):
        found = ", ".join(f"{name}({', '.join(sig.structured_input_signature[1])})"
                          for name, sig in loaded.signatures.items()) or "none"
        raise ModelError(f"{path} is not a fer_keras SavedModel: it needs a {SERVING_SIGNATURE} signature taking "
                       f"float32 image [N, 48, 48, 1] and returning probabilities [N, {NUM_CLASSES}] (signatures: {found})")
    return serve


def _serves_faces(signature):
    """Whether a concrete function takes only `image` (N, 48, 48, 1) and returns `probabilities` (N, 7)."""
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    return (
        set(inputs) == {"image"}
        and inputs["image"].dtype == tf.float32
        and inputs["image"].shape.is_compatible_with((None, *IMAGE_SHAPE))
        and "probabilities" in outputs
        and outputs["probabilities"].shape.is_compatible_with((None, NUM_CLASSES))
    )


def is_savedmodel(path):
    """Whether `path` is a SavedModel folder."""
    return (Path(path) / "saved_model.pb").exists()


def float32_model(model):
    """`model` itself when every layer computes in float32, else a float32 copy with the same weights.

    A model trained under `mixed_bfloat16` computes in bfloat16: slow on CPUs without it, and rejected
    by the TFLite converter. The copy computes the same function in float32 (the weights were float32
    variables all along); the shipped models and every TFLite variant are made from it.
    """
    config = model.get_config()
    if not _set_float32(config):
        return model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # sublayers built inside custom layers
    try:
        copy = type(model).from_config(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def _set_float32(config):
    """Make every mixed dtype policy in a (nested) model config float32; whether any was changed."""
    changed = False
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and str(config.get("config", {}).get("name")).startswith("mixed_"):
            config["config"]["name"] = "float32"
            return True
        for key, value in config.items():
            if key == "dtype" and isinstance(value, str) and value.startswith("mixed_"):
                config[key] = "float32"
                changed = True
            else:
                changed |= _set_float32(value)
    elif isinstance(config, list):
        for value in config:
            changed |= _set_float32(value)
    return changed
