"""Evaluate a trained model on FER2013 splits: metrics.json, classification report, confusion plots.

`python -m fer_keras.evaluate MODEL_OR_RUN --split NAME [--data PATH] [--out DIR] [--batch-size B]`
"""

import argparse
from pathlib import Path

import numpy as np
from scipy.special import softmax

from fer_keras.core import runs
from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.data import default_data, load_fer2013, split_data
from fer_keras.errors import FerError
from fer_keras.core.io import check_output, write_json, write_text
from fer_keras.modelio.saving import load_keras_model, resolve_model_file
from fer_keras.evaluation.metrics import compute_metrics, train_val_gap
from fer_keras.evaluation.plots import plot_confusion_matrix

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"training": "train", "publictest": "val", "privatetest": "test"}


def evaluate_model(model, splits, batch_size=256, verbose="auto"):
    """Metrics of `model` (logits over float 0-255 images) on each labelled split: {split: metrics}."""
    results = {}
    for name, data in splits.items():
        if data.labels is None or len(data.labels) == 0:
            continue
        logits = model.predict(data.images, batch_size=batch_size, verbose=verbose)
        results[name] = compute_metrics(data.labels, softmax(logits.astype(np.float64), axis=1))
    return results


def accuracy_with_tta(model, data_path, split="val"):
    """Accuracy of `model` on the labelled `split` (default PublicTest) of `data_path`, averaging
    each face's probabilities with its mirror image's (flip TTA, as `predict --tta` does)."""
    from fer_keras.inference.predictor import Predictor

    data = split_data(load_fer2013(data_path))[split]
    probs = Predictor(model, tta=True).predict_proba(data.images)
    return float(np.mean(probs.argmax(axis=1) == data.labels))


def write_evaluation(out_dir, results, extra=None):
    """Write classification_report.txt, plots/confusion_matrix_<split>.png and, last (a run folder's
    mark of completion), metrics.json.

    metrics.json holds one section per split, the train-validation accuracy gap when both are
    there, and `extra` (params, epochs, wall time, ...) at the top level. Returns that dict.
    """
    out_dir = Path(out_dir)
    metrics = {split: {k: v for k, v in m.items() if k != "report"} for split, m in results.items()}
    gap = train_val_gap(results)
    if gap is not None:
        metrics["train_val_gap"] = gap
    metrics.update(extra or {})
    write_text(
        out_dir / runs.REPORT_FILE,
        "\n".join(f"== {split} ({m['n']} images) ==\n{m['report']}" for split, m in results.items()),
    )
    for split, m in results.items():
        plot_confusion_matrix(
            m["confusion_matrix"],
            out_dir / runs.PLOTS_DIR / runs.CONFUSION_PLOT.format(split=split),
            title=f"Confusion matrix: {split}",
        )
    write_json(out_dir / runs.METRICS_FILE, metrics)
    return metrics


def split_name(name):
    """Canonical split name from train/val/test or the Usage values Training/PublicTest/PrivateTest."""
    key = SPLIT_ALIASES.get(name.lower(), name.lower())
    if key not in SPLITS:
        raise argparse.ArgumentTypeError(
            f"unknown split {name!r}: use train, val, test (or Training, PublicTest, PrivateTest)"
        )
    return key


def load_split(path, split, cfg):
    """The labelled `split` of the dataset at `path`, divided as the run `cfg` divided it."""
    data = load_fer2013(path)
    if data.labels is None:
        raise FerError(f"{path} has no labels: there is nothing to evaluate against")
    kwargs = {k: cfg[k] for k in ("val_fraction", "seed", "folds", "fold") if cfg.get(k) is not None}
    splits = split_data(data, mode=cfg.get("split", "usage"), **kwargs)
    if split not in splits:
        raise FerError(f"{path} has no {split} split (it has: {', '.join(splits)})")
    return splits[split]


def _parse_args(argv):
    parser = ArgumentParser(
        prog="python -m fer_keras.evaluate",
        description="Evaluate a trained model on one split: metrics.json, report and plots.",
    )
    parser.add_argument("model", metavar="MODEL_OR_RUN", help="a .keras file or a run folder with model.keras")
    parser.add_argument("--split", required=True, type=split_name,
                        help="train, val or test (aliases: Training, PublicTest, PrivateTest)")
    parser.add_argument("--data", help="dataset file (default: the run's data, else the synthetic default)")
    parser.add_argument("--out", help="output folder (default: <run>/eval-<split>)")
    parser.add_argument("--batch-size", type=int, default=256)
    return parser.parse_args(argv)


@user_errors
def main(argv=None):
    args = _parse_args(argv)
    model_file = resolve_model_file(args.model)
    run_dir = model_file.parent
    out_dir = check_output(args.out or run_dir / runs.EVALUATION_DIR.format(split=args.split), folder=True)
    cfg = runs.read_config(run_dir)
    data_path = args.data or cfg.get("data") or default_data()
    split = load_split(data_path, args.split, cfg)
    results = evaluate_model(load_keras_model(model_file), {args.split: split}, args.batch_size)
    write_evaluation(out_dir, results, extra={"model": str(model_file), "data": str(data_path)})
    m = results[args.split]
    print(
        f"{args.split}: accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}, "
        f"loss {m['loss']:.4f} on {m['n']} images; wrote {out_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
