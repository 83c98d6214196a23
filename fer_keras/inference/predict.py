"""Predict facial expressions for FER2013 CSV rows or image files, with one model or an ensemble.

`python -m fer_keras.predict [--model PATH ...] (--csv FILE | --images FILES_OR_DIRS...)
--out FILE [--probabilities] [--tta [flip|flip_rotate]] [--detect-faces] [--batch-size B]`

Models are SavedModel folders, `.keras` files (or run folders) or `.tflite` files (`python -m
fer_keras.modelio.export RUN --tflite`), mixed freely (default: the shipped model); several are averaged (ensemble),
`--tta` also averages each model over the horizontally flipped faces (`--tta flip_rotate`: and over
both turned by +-6 degrees, see fer_keras.inference.tta). Bad inputs are reported on
stderr one per line (`WHERE: reason`), everything else is still predicted, and the exit status is 1.
CSV output has one row per input data row, in order (Kaggle's submission shape); an unreadable row
keeps its place with empty cells. Image output has one row per image (per face with
--detect-faces); a missing or unreadable image, a folder without images, or an image where no
face is found gets no row. The output is always written, with only its header when nothing was predicted.
"""

import argparse
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from scipy.special import softmax

from fer_keras import pretrained

from fer_keras.inference import faces

from fer_keras.modelio import tflite
from fer_keras.core.cli import ArgumentParser, keras_verbosity, user_errors
from fer_keras.constants import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES
from fer_keras.data import load_fer2013
from fer_keras.errors import FerError
from fer_keras.core.io import atomic_path, check_output
from fer_keras.modelio.saving import is_savedmodel, load_keras_model, load_savedmodel
from fer_keras.inference.tta import add_tta_argument, tta_views


def load_predictor(path):
    """A function float32 faces (N, 48, 48, 1) in 0..255 -> float32 probabilities (N, 7).

    `path` is a SavedModel folder (its `serving_default` signature), a `.tflite` file (LiteRT
    interpreter, any batch size) or a `.keras` file / run folder.
    """
    if tflite.is_tflite(path):
        return tflite.load_tflite(path)
    if is_savedmodel(path):
        serve = load_savedmodel(path)
        return lambda x: serve(image=tf.constant(x))["probabilities"].numpy()
    return keras_predictor(load_keras_model(path))


def keras_predictor(model):
    """A function float32 faces (N, 48, 48, 1) in 0..255 -> float32 probabilities (N, 7) of a Keras model."""
    return lambda x: softmax(np.asarray(model.predict_on_batch(x), np.float32), axis=-1)


def predict_probabilities(predictors, images, batch_size=256, tta=False, verbose=False):
    """Mean probabilities (N, 7) over the predictors and over the test-time views of `tta` (see `tta_views`),
    made one batch at a time so that no view of the whole input is held."""
    starts = range(0, len(images), batch_size)
    total = np.zeros((len(images), NUM_CLASSES), np.float64)
    steps = len(predictors) * len(starts)
    progress = keras.utils.Progbar(steps, verbose=keras_verbosity()) if verbose and steps > 1 else None
    for start in starts:
        views = tta_views(images[start : start + batch_size], tta)
        for predict in predictors:
            total[start : start + batch_size] += np.mean([predict(view.astype(np.float32)) for view in views],
                                                         axis=0, dtype=np.float64)
            if progress:
                progress.add(1)
    return (total / len(predictors)).astype(np.float32)


def prediction_columns(probs, probabilities=False):
    """Output columns: `emotion` (class index), `class_name`, and optionally one column per class."""
    index = probs.argmax(axis=1)
    columns = {"emotion": index, "class_name": np.asarray(CLASS_NAMES)[index]}
    if probabilities:
        columns.update({name: probs[:, i] for i, name in enumerate(CLASS_NAMES)})
    return pd.DataFrame(columns)


def predict_csv(predictors, path, *, batch_size=256, tta=False, probabilities=False):
    """Predictions for every data row of a FER2013 CSV (any layout), in order: (DataFrame, problems).

    An unreadable row keeps its place with empty cells; `problems` names each one, file and line.
    """
    data = load_fer2013(path, skip_bad=True)
    probs = predict_probabilities(predictors, data.images, batch_size, tta, verbose=True)
    table = prediction_columns(probs, probabilities)
    problems = [f"{path}: line {problem.line}: {problem.detail}" for problem in data.problems]
    return _with_bad_rows(table if probabilities else table[["emotion"]], data), problems


def _with_bad_rows(table, data):
    """`table` (a row per good row of `data`) spread over all the file's data rows, bad rows empty
    (`emotion` becomes a nullable Int64 column, so good rows still print as integers)."""
    bad = np.array([problem.line for problem in data.problems], np.int64)
    rows = np.sort(np.concatenate([data.lines, bad]))
    return table.astype({"emotion": "Int64"}).set_axis(np.searchsorted(rows, data.lines)).reindex(range(len(rows)))


def collect_images(paths):
    """`(files, problems)`: the files named in `paths`, folders expanded to the image files inside them
    (recursively, sorted); a missing path or a folder without image files is a problem."""
    extensions = faces.image_extensions()
    files, problems = [], []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
            files += found
            if not found:
                problems.append(f"{path}: no image files in this folder")
        elif path.exists():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems


def predict_images(predictors, paths, *, detect=False, batch_size=256, tta=False, probabilities=False):
    """Predictions for image files, or for every face found in them: (DataFrame, problems)."""
    columns = ["file", "x", "y", "w", "h"] if detect else ["file"]
    rows, crops = [], []
    files, problems = collect_images(paths)
    for path in files:
        try:
            rgb = faces.read_rgb(path)
        except FerError as exc:
            problems.append(str(exc))
            continue
        gray = faces.rgb_to_gray(rgb)
        if not detect:
            rows.append([str(path)])
            crops.append(faces.to_face(gray))
            continue
        boxes = faces.detect_faces(rgb)  # the DNN detector sees colour
        if not boxes:
            problems.append(f"{path}: no face found")
        for x, y, w, h in boxes:
            rows.append([str(path), x, y, w, h])
            crops.append(faces.to_face(faces.crop_face(gray, (x, y, w, h))))
    images = np.stack(crops) if crops else np.zeros((0, *IMAGE_SHAPE), np.uint8)
    probs = predict_probabilities(predictors, images, batch_size, tta, verbose=True)
    table = pd.concat([pd.DataFrame(rows, columns=columns), prediction_columns(probs, probabilities)], axis=1)
    return table, problems


def write_csv(table, path):
    """Write the predictions atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")


def _parse_args(argv):
    parser = ArgumentParser(
        prog="python -m fer_keras.predict", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", action="append",
                        help="SavedModel folder, .keras file, run folder or .tflite file; repeat for an ensemble "
                             "(kinds may be mixed); default: the shipped model (python -m fer_keras.pretrained)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="FER2013 CSV in any layout (labels optional)")
    source.add_argument("--images", nargs="+", help="PNG/JPEG files or folders of them")
    parser.add_argument("--out", required=True, help="output CSV")
    parser.add_argument("--probabilities", action="store_true", help="add one probability column per class")
    add_tta_argument(parser)
    parser.add_argument("--detect-faces", action="store_true",
                        help="find faces (OpenCV's DNN face detector, see fer_keras.inference.detectors) and classify each "
                             "one (with --images)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    if args.detect_faces and not args.images:
        parser.error("--detect-faces works with --images")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


@user_errors
def main(argv=None):
    args = _parse_args(argv)
    check_output(args.out)
    if not args.model:
        print(pretrained.describe())
    predictors = [load_predictor(path) for path in args.model or [pretrained.model_path()]]
    options = {"batch_size": args.batch_size, "tta": args.tta, "probabilities": args.probabilities}
    if args.csv:
        table, problems = predict_csv(predictors, args.csv, **options)
    else:
        table, problems = predict_images(predictors, args.images, detect=args.detect_faces, **options)
    write_csv(table, args.out)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(table)} rows written to {args.out}" + ("; failed inputs listed on stderr" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
