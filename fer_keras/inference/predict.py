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
--detect-faces); a missing or unreadable image, a folder without images, or with --detect-faces an
image under 16 pixels a side or one where no face is found, gets no row. The output is written
atomically whenever the inputs were read, replacing any earlier file, with only its header when
nothing was predicted; a command stopped by an `error:` line (exit status 2: a bad flag, model or
output path) writes nothing.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fer_keras import pretrained
from fer_keras.inference import faces
from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.constants import CLASS_NAMES, IMAGE_SHAPE
from fer_keras.data import load_fer2013
from fer_keras.errors import FerError
from fer_keras.core.io import atomic_path, check_output
from fer_keras.inference.predictor import Predictor
from fer_keras.inference.tta import add_tta_argument


def prediction_columns(probs, probabilities=False):
    """Output columns: `emotion` (class index), `class_name`, and optionally one column per class."""
    index = probs.argmax(axis=1)
    columns = {"emotion": index, "class_name": np.asarray(CLASS_NAMES)[index]}
    if probabilities:
        columns.update({name: probs[:, i] for i, name in enumerate(CLASS_NAMES)})
    return pd.DataFrame(columns)


def predict_csv(predictor, path, *, batch_size=256, probabilities=False):
    """Predictions for every data row of a FER2013 CSV (any layout), in order: (DataFrame, problems).

    An unreadable row keeps its place with empty cells; `problems` names each one, file and line.
    """
    data = load_fer2013(path, skip_bad=True)
    probs = predictor.predict_proba(data.images, batch_size, verbose=True)
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


def predict_images(predictor, paths, *, detect=False, batch_size=256, probabilities=False):
    """Predictions for image files, or for every face found in them: (DataFrame, problems)."""
    columns = ["file", "x", "y", "w", "h"] if detect else ["file"]
    rows, crops = [], []
    files, problems = collect_images(paths)
    for path in files:
        try:
            rgb = faces.read_rgb(path)
            if detect:
                boxes, found = faces.find_faces(rgb, where=path)  # the DNN detector sees colour
            else:
                boxes, found = [()], faces.to_face(faces.rgb_to_gray(rgb))[None]
        except FerError as exc:
            problems.append(str(exc))
            continue
        if not boxes:
            problems.append(f"{path}: no face found")
        rows += [[str(path), *box] for box in boxes]
        crops += list(found)
    images = np.stack(crops) if crops else np.zeros((0, *IMAGE_SHAPE), np.uint8)
    probs = predictor.predict_proba(images, batch_size, verbose=True)
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
    predictor = Predictor.load(args.model or pretrained.model_path(), tta=args.tta)
    options = {"batch_size": args.batch_size, "probabilities": args.probabilities}
    if args.csv:
        table, problems = predict_csv(predictor, args.csv, **options)
    else:
        table, problems = predict_images(predictor, args.images, detect=args.detect_faces, **options)
    write_csv(table, args.out)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(table)} rows written to {args.out}" + ("; failed inputs listed on stderr" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
