"""Export a trained model: a SavedModel (default) or TFLite files (`--tflite`).

`python -m fer_keras.export RUN_DIR_OR_MODEL [--out DIR] [--tflite [--quantize none|float16|int8 ...]
[--data CSV] [--calibration-faces N]]`

The SavedModel has serving signatures for 0-255 face images and for raw FER2013 pixel strings, and
needs only TensorFlow to serve (`tf.saved_model.load`). TFLite files (`model.tflite`,
`model-float16.tflite`, `model-int8.tflite`, see `fer_keras.modelio.tflite`) take the same images. Either way
normalisation is inside the model, augmentation is not (the model is called with `training=False`),
and outputs are float32 probabilities, for models trained under mixed_bfloat16 too.
"""

import argparse
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from fer_keras import __version__
from fer_keras.core import runs
from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.constants import CLASS_NAMES, IMAGE_SHAPE, NUM_PIXELS
from fer_keras.errors import FerError
from fer_keras.core.io import check_output
from fer_keras.modelio.saving import is_savedmodel, load_keras_model, resolve_model_file
from fer_keras.modelio.tflite import CALIBRATION_FACES, QUANTIZATIONS, calibration_faces, export_tflite

__all__ = ["build_archive", "decode_pixels", "export_savedmodel", "export_tflite", "main"]

METADATA_FILE = "fer_keras.json"


def decode_pixels(pixels):
    """Decode FER2013 `pixels` strings (tf.string [N]) to float32 images [N, 48, 48, 1] in-graph.

    Raises InvalidArgumentError naming the bad rows when a row does not hold exactly 2304
    integers in 0..255 (`to_tensor` would silently pad or truncate it).
    """
    tokens = tf.strings.split(pixels)
    counts = tokens.row_lengths()
    bad_count = tf.where(counts != NUM_PIXELS)[:, 0]
    count_ok = tf.debugging.Assert(
        tf.size(bad_count) == 0,
        [f"pixels: each row must hold {NUM_PIXELS} space-separated values; bad rows:", bad_count,
         "with counts:", tf.gather(counts, bad_count)],
        summarize=10,
    )
    with tf.control_dependencies([count_ok]):
        values = tf.strings.to_number(tokens.flat_values, out_type=tf.int32)
    in_range = (values >= 0) & (values <= 255)
    bad_range = tf.unique(tf.boolean_mask(tokens.value_rowids(), ~in_range))[0]
    range_ok = tf.debugging.Assert(
        tf.size(bad_range) == 0,
        ["pixels: values must be integers in 0..255; bad rows:", bad_range],
        summarize=10,
    )
    with tf.control_dependencies([range_ok]):
        return tf.reshape(tf.cast(values, tf.float32), (-1, *IMAGE_SHAPE))


def _probabilities(model, images):
    """Float32 softmax of the model's logits in inference mode (bf16 models included)."""
    return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32))


def build_archive(model):
    """ExportArchive with `serving_default` (images) and `classify_pixels` (pixel strings)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    class_names = tf.constant(CLASS_NAMES)

    def serve(image):
        return {"probabilities": _probabilities(model, image)}

    def classify_pixels(pixels):
        probs = _probabilities(model, decode_pixels(pixels))
        index = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return {"probabilities": probs, "class_index": index, "class_name": tf.gather(class_names, index)}

    archive.add_endpoint(
        "serving_default", serve, input_signature=[tf.TensorSpec((None, *IMAGE_SHAPE), tf.float32, name="image")]
    )
    archive.add_endpoint(
        "classify_pixels", classify_pixels, input_signature=[tf.TensorSpec((None,), tf.string, name="pixels")]
    )
    return archive


def export_savedmodel(model, out_dir, model_name=None):
    """Write `model` as a SavedModel at `out_dir` (replacing an earlier export) and return the path.

    Written to a temporary folder beside `out_dir`, then renamed into place, so a kill never
    leaves a half-written export; temporary folders of killed exports are removed first.
    `fer_keras.json` inside records class names, version, model name.
    """
    out_dir = check_output(out_dir, folder=True)
    if out_dir.exists() and any(out_dir.iterdir()) and not is_savedmodel(out_dir):
        raise FerError(f"{out_dir} holds files but is not a SavedModel: not replacing it with the export")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out_dir, "tmp"), dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a served model is read by other users
    try:
        build_archive(model).write_out(str(tmp), verbose=False)
        (tmp / METADATA_FILE).write_text(json.dumps(_metadata(model, model_name), indent=2) + "\n")
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _temp_prefix(out_dir, kind):
    """`.<name>-<kind>-<pid>-`: beside `out_dir`, marked with the writing process."""
    return f".{out_dir.name}-{kind}-{os.getpid()}-"


def _remove_stale_temps(out_dir):
    """Remove the temporary folders (`_temp_prefix` + mkdtemp's 8 characters) that exports to `out_dir`
    killed midway left beside it; those of a process still running are kept."""
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}-(?:tmp|old)-(\d+)-[a-z0-9_]{{8}}")
    for path in out_dir.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink() and not _running(int(match[1])):
            shutil.rmtree(path)


def _running(pid):
    """Whether process `pid` exists (this one included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _metadata(model, model_name):
    """What a user of the SavedModel needs besides the graph."""
    return {
        "class_names": list(CLASS_NAMES),
        "model_name": model_name or model.name,
        "fer_keras_version": __version__,
        "input": "float32 [N, 48, 48, 1] grayscale, values 0-255",
        "signatures": {
            "serving_default": "image -> probabilities [N, 7]",
            "classify_pixels": "pixels (FER2013 strings) -> probabilities, class_index, class_name",
        },
    }


def _replace_dir(src, dst):
    """Move folder `src` to `dst`, replacing `dst`; the old one is renamed aside before removal."""
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=_temp_prefix(dst, "old"), dir=dst.parent))
        os.replace(dst, old / dst.name)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old)


def _parse_args(argv):
    parser = ArgumentParser(
        prog="python -m fer_keras.export", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="run folder (uses its model.keras) or a .keras file")
    parser.add_argument("--out", help="output folder (default: <run folder>/savedmodel for the SavedModel, "
                                      "the run folder for --tflite)")
    parser.add_argument("--tflite", action="store_true",
                        help="write TFLite file(s) <out>/model[-float16|-int8].tflite instead of a SavedModel")
    parser.add_argument("--quantize", nargs="+", choices=QUANTIZATIONS, metavar="VARIANT",
                        help="TFLite variant(s) with --tflite: none (float32, the default), float16 (float16 "
                             "weights), int8 (full-integer, calibrated on Training faces); several at once")
    parser.add_argument("--data", metavar="CSV", help="FER2013 CSV whose Training faces calibrate int8 "
                                                      "(default: the run's config.json data, else the synthetic set)")
    parser.add_argument("--calibration-faces", type=int, default=CALIBRATION_FACES, metavar="N",
                        help=f"Training faces that calibrate int8 (default {CALIBRATION_FACES})")
    args = parser.parse_args(argv)
    if not args.tflite and (args.quantize or args.data or args.calibration_faces != CALIBRATION_FACES):
        parser.error("--quantize, --data and --calibration-faces go with --tflite")
    if args.calibration_faces < 1:
        parser.error("--calibration-faces must be at least 1")
    args.quantize = list(dict.fromkeys(args.quantize or ["none"]))
    return args


@user_errors
def main(argv=None):
    """`python -m fer_keras.export RUN_DIR_OR_MODEL [--out DIR] [--tflite [--quantize ...]]`."""
    args = _parse_args(argv)
    model_file = resolve_model_file(args.model)
    if not args.tflite:
        out = Path(args.out) if args.out else model_file.parent / runs.SAVEDMODEL_DIR
        export_savedmodel(load_keras_model(model_file), out, model_name=runs.read_config(model_file.parent).get("model"))
        print(f"SavedModel written to {out} (signatures: serving_default, classify_pixels)")
        return 0
    out = check_output(args.out if args.out else model_file.parent, folder=True)
    model = load_keras_model(model_file)
    calibration = None
    if "int8" in args.quantize:
        data = args.data or runs.read_config(model_file.parent).get("data")
        calibration = calibration_faces(data, args.calibration_faces)
        print(f"int8: calibrating on {len(calibration)} Training faces of "
              f"{data or 'the synthetic default set'}")
    for quantize in args.quantize:
        path = export_tflite(model, out, quantize, calibration)
        print(f"TFLite ({quantize}) written to {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
