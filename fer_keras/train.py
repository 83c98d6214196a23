"""Train a registered architecture on FER2013 (or the synthetic default), evaluate it, track it.

`python -m fer_keras.train [--recipe NAME] [--config FILE] [--data PATH] [--model NAME]
[--set KEY=VALUE ...] [--epochs N] [--out DIR] ...`: every config key has a flag (`--help`).
Running the same command again with the same `--out` resumes an interrupted run. With
`--strategy multi_worker` every worker runs the same command (its `TF_CONFIG` differs). Exit status: 0,
2 for a user error (bad config, data, NaN loss), 1 when `--overfit-check` stays below 100%.
"""

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import keras

from fer_keras import callbacks as cb
from fer_keras import config as config_lib
from fer_keras import multi_worker, tracking, training
from fer_keras.cli import keras_verbosity, user_errors
from fer_keras.distribute import check_even_batches, get_strategy
from fer_keras.errors import FerError
from fer_keras.evaluate import evaluate_model, write_evaluation
from fer_keras.export import export_savedmodel
from fer_keras.io import write_json
from fer_keras.models import default_hparams
from fer_keras.optim import schedule_callbacks
from fer_keras.plots import plot_history
from fer_keras.saving import MODEL_FILE, load_keras_model

TRACKING_KEYS = ("wandb", "wandb_project", "group", "tags", "name")  # may change on resume
SAVEDMODEL_DIR = "savedmodel"


def train(cfg, verbose=None):
    """Run one training run as `cfg` (a flat config dict) says; return its metrics.json content
    plus `run_dir`. A complete run folder is not trained again; an interrupted one resumes."""
    cfg = config_lib.validate(cfg)
    if cfg["overfit_check"]:
        cfg = overfit_config(cfg)
    strategy = get_strategy(cfg["strategy"])  # before any other TensorFlow work (device setup)
    chief, task = multi_worker.role(strategy)
    if cfg["strategy"] != "default":
        where = f"; this process is {task}{' (chief)' if chief else ''}" if task else ""
        print(f"strategy: {cfg['strategy']} ({type(strategy).__name__}) with "
              f"{strategy.num_replicas_in_sync} replicas{where}")
    keras.utils.set_random_seed(cfg["seed"])
    run_dir = Path(cfg["out"] or f"runs/{cfg['model']}-{time.strftime('%Y%m%d-%H%M%S')}")
    if not chief:  # the chief owns the run folder, W&B and the export; other workers keep their own
        run_dir = run_dir / task
        cfg.update(wandb="disabled", export=False)
    cfg["out"] = str(run_dir)
    finished = _finished_run(run_dir, cfg)
    if finished is not None:
        print(f"run {run_dir} is already complete (metrics.json); use another --out to train again")
        return {**finished, "run_dir": str(run_dir)}
    write_json(run_dir / "config.json", cfg)

    splits = training.load_splits(cfg)
    if cfg["overfit_check"]:
        train_split = splits["train"]
        index = training.stratified_sample(train_split, cfg["overfit_check"], cfg["seed"])
        splits = {"train": train_split.subset(index), "val": train_split.subset(index)}
    check_even_batches(strategy, cfg["batch_size"], {k: len(splits[k]) for k in ("train", "val")})
    train_ds, val_ds, fit_kwargs = training.make_datasets(cfg, splits)
    with strategy.scope():
        model = training.build_compiled_model(cfg, training.steps_per_epoch(cfg, splits), splits["train"].labels)

    run = tracking.start_run(cfg, run_dir)
    exit_code = 1
    try:
        callbacks = cb.training_callbacks(cfg, run_dir) + schedule_callbacks(cfg)
        if cfg["strategy"] == "multi_worker":
            callbacks.append(multi_worker.SameResumeEpoch())
        logger = tracking.metrics_logger(run)
        if logger is not None:
            callbacks.append(logger)
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            callbacks=callbacks,
            verbose=verbose if verbose is not None else keras_verbosity(),
            **fit_kwargs,
        )
        _stop_if_diverged(history, run_dir, cfg)
        metrics = _evaluate(cfg, run_dir, splits, run, verbose=0)
        exit_code = 0
    finally:
        tracking.finish(run, exit_code)
    shutil.rmtree(run_dir / cb.BACKUP_DIR, ignore_errors=True)
    return {**metrics, "run_dir": str(run_dir)}


def overfit_config(cfg):
    """`cfg` for the overfitting sanity check: no augmentation and no regularisation of any kind
    (every builder hyperparameter named *dropout or weight_decay set to 0)."""
    off = {k: 0.0 for k in default_hparams(cfg["model"]) if k.endswith("dropout") or k == "weight_decay"}
    return {
        **cfg,
        "augment": "none",
        "mixup": 0.0,
        "cutmix": 0.0,
        "weight_decay": 0.0,
        "label_smoothing": 0.0,
        "class_weight": None,
        "sampling": "shuffle",
        "early_stopping": None,
        "model_args": {**cfg["model_args"], **off},
    }


def _finished_run(run_dir, cfg):
    """metrics.json of a complete run in `run_dir`, None for a new or interrupted one.

    A folder holding a run with other settings is refused: resuming it would mix two runs.
    """
    saved_path = run_dir / "config.json"
    if not saved_path.exists():
        return None
    saved = json.loads(saved_path.read_text())
    changed = sorted(k for k in cfg if k not in TRACKING_KEYS and saved.get(k) != cfg[k])
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {cfg[k]!r}" for k in changed)
        raise FerError(
            f"run folder {run_dir} holds a run with other settings ({diffs}); "
            "resume it with the same settings or choose another --out"
        )
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists() and not (run_dir / cb.BACKUP_DIR).exists():
        return json.loads(metrics_path.read_text())
    return None


def _stop_if_diverged(history, run_dir, cfg):
    """After `TerminateOnNaN` stopped `fit`: drop the backup (it holds the broken weights) and fail
    with what happened and what is kept."""
    losses = history.history.get("loss", [])
    if not losses or math.isfinite(losses[-1]):
        return
    shutil.rmtree(run_dir / cb.BACKUP_DIR, ignore_errors=True)
    model_path = run_dir / MODEL_FILE
    kept = (
        f"the last good checkpoint is kept at {model_path}"
        if model_path.exists()
        else "no epoch finished before it, so there is no checkpoint"
    )
    raise FerError(
        f"training stopped: the loss became NaN or infinite in epoch {history.epoch[-1] + 1} "
        f"(learning_rate {cfg['learning_rate']:g} may be too high); {kept}"
    )


def _evaluate(cfg, run_dir, splits, run, verbose):
    """Evaluate the best checkpoint on every split and write metrics.json, the report, the plots,
    the W&B summary and (unless `export` is off) the SavedModel."""
    start = time.perf_counter()
    model_path = run_dir / MODEL_FILE
    model = load_keras_model(model_path)
    results = evaluate_model(model, splits, batch_size=max(256, cfg["batch_size"]), verbose=verbose)
    _, rows = cb.read_history(run_dir / cb.HISTORY_FILE)
    val_acc = [float(r["val_accuracy"]) for r in rows]
    extra = {
        "model": cfg["model"],
        "params": int(model.count_params()),
        "epochs": len(rows),
        "best_epoch": val_acc.index(max(val_acc)) + 1 if rows else None,
        "train_time": sum(float(r["epoch_time"]) for r in rows),  # every epoch, across resumes
    }
    if cfg["overfit_check"]:
        accuracy = results["train"]["accuracy"]
        extra["overfit_check"] = {"samples": cfg["overfit_check"], "train_accuracy": accuracy,
                                  "reached_100": accuracy >= 1.0}
    plot_history(run_dir / cb.HISTORY_FILE, run_dir / "plots" / "history.png")
    extra["wall_time"] = extra["train_time"] + time.perf_counter() - start
    metrics = write_evaluation(run_dir, results, extra)
    tracking.log_results(run, results, model_path=model_path, extra=extra)
    if cfg["export"]:
        export_savedmodel(model, run_dir / SAVEDMODEL_DIR, model_name=cfg["model"])
    _print_summary(run_dir, metrics, extra)
    return metrics


def _print_summary(run_dir, metrics, extra):
    """The run's headline numbers on the terminal."""
    for split in ("train", "val", "test"):
        if split in metrics:
            m = metrics[split]
            print(f"{split}: accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}, "
                  f"loss {m['loss']:.4f}")
    check = extra.get("overfit_check")
    if check:
        verdict = "reached" if check["reached_100"] else "did NOT reach"
        print(f"overfit check: training accuracy {check['train_accuracy']:.2%} on {check['samples']} "
              f"samples: {verdict} 100%")
    print(f"{extra['epochs']} epochs, {extra['wall_time']:.0f} s; run folder: {run_dir}")


def build_parser():
    """argparse parser with one flag per config key (`--learning-rate`), `--set` for builder
    hyperparameters and `--config`; unset flags are absent from the namespace."""
    parser = argparse.ArgumentParser(
        prog="python -m fer_keras.train",
        description="Train, evaluate and track a FER2013 model. Settings resolve as "
        "defaults < --recipe < --config < flags; values like 1e-3, true, null, [a, b] are parsed.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="FILE", help="JSON or YAML file of config keys")
    parser.add_argument(
        "--set", metavar="KEY=VALUE", nargs="+", action="extend", dest="model_args",
        help="builder hyperparameters, e.g. --set dropout=0.3 widths=[32,64]",
    )
    for key, spec in config_lib.SPECS.items():
        if key == "model_args":
            continue
        flag = "--" + key.replace("_", "-")
        default = config_lib.DEFAULTS[key]
        help_text = f"{config_lib.HELP[key]} (default: {default})".replace("%", "%%")
        if key == "recipe":
            help_text += f"; one of: {', '.join(config_lib.list_recipes())}"
        if spec is not None and spec.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif key == "tags":
            parser.add_argument(flag, nargs="*", metavar="TAG", help=help_text)
        else:
            choices = spec.choices if spec is not None and spec.choices and not spec.optional else None
            parser.add_argument(
                flag, type=str if choices else config_lib.coerce, choices=choices,
                metavar="{" + ",".join(choices) + "}" if choices else key.upper(),
                help=help_text,
            )
    return parser


def parse_args(argv=None):
    """`(overrides, config_file)` from the command line."""
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config", None)
    if "model_args" in args:
        args["model_args"] = config_lib.parse_assignments(args["model_args"])
    return args, config_file


@user_errors
def main(argv=None):
    overrides, config_file = parse_args(argv)
    metrics = train(config_lib.resolve_config(overrides, config_file))
    check = metrics.get("overfit_check")
    return 1 if check and not check["reached_100"] else 0


if __name__ == "__main__":
    sys.exit(main())
