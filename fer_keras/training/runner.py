"""One training run, whoever starts it: `fer_keras.training.train` and every tuning trial call `run_training`.

It locks the run folder, resumes or refuses what the folder holds, trains with the run-folder
callbacks (best checkpoint, history, backup, early stop, NaN stop) and W&B, then evaluates the best
checkpoint and writes the run's record: classification_report.txt, plots/, the SavedModel (with
`export`) and, last, metrics.json, which marks the run complete.
"""

import math
import shutil
import time
from pathlib import Path

import keras
import tensorflow as tf

from fer_keras.training import callbacks as cb
from fer_keras.training import tracking
from fer_keras.training import parts
from fer_keras.core.cli import keras_verbosity
from fer_keras.training.distribute import check_even_batches
from fer_keras.errors import DivergedError, FerError
from fer_keras.evaluation.evaluate import evaluate_model, write_evaluation
from fer_keras.modelio.export import export_savedmodel
from fer_keras.core.io import write_json
from fer_keras.core.lock import folder_lock
from fer_keras.models.profile import count_macs
from fer_keras.evaluation.plots import plot_history
from fer_keras.training.precision import machine_summary
from fer_keras.training.speed import images_per_second, speed_settings
from fer_keras.modelio.saving import load_keras_model
from fer_keras.core import runs
from fer_keras.data.augment import network_of


def run_training(cfg, run_dir, *, strategy=None, splits=None, initial_weights=None, initial_epoch=0,
                 callbacks=(), wandb_config=None, verbose=None):
    """Train `cfg` (a resolved config) in `run_dir` and record it; return metrics.json's content.

    A complete run is not trained again, an interrupted one resumes, and a folder holding finished
    epochs of other settings is refused. `strategy`: the `tf.distribute` strategy to build under
    (default: the current one); `splits`: data already loaded (default: `cfg["data"]`);
    `initial_weights`, `initial_epoch`: a checkpoint to start from and the epoch it ended (a
    Hyperband trial continuing another); `callbacks`: added to the run's own;
    `wandb_config`: what the W&B run records instead of `cfg` (a trial adds its search's naming).
    """
    run_dir = Path(run_dir)
    with folder_lock(run_dir, "training run"):
        _refuse_foreign_folder(run_dir)
        finished = runs.finished_run(run_dir, cfg)
        if finished is not None:
            shutil.rmtree(run_dir / runs.BACKUP_DIR, ignore_errors=True)  # left by a kill during clean-up
            print(f"run {run_dir} is already complete ({runs.METRICS_FILE}); use another output folder to train again")
            return finished
        write_json(run_dir / runs.CONFIG_FILE, cfg)
        splits = splits if splits is not None else parts.load_splits(cfg)
        strategy = strategy or tf.distribute.get_strategy()
        check_even_batches(strategy, cfg["batch_size"], {k: len(splits[k]) for k in ("train", "val")})
        keras.utils.set_random_seed(cfg["seed"])
        train_ds, val_ds, fit_kwargs = parts.make_datasets(cfg, splits)
        with strategy.scope():
            model, schedule_callbacks = parts.build_compiled_model(
                cfg, parts.steps_per_epoch(cfg, splits), splits["train"].labels
            )
            if initial_weights is not None:
                network_of(model).load_weights(initial_weights)

        run = tracking.start_run(wandb_config or cfg, run_dir)
        exit_code = 1
        try:
            logger = tracking.metrics_logger(run)
            history = model.fit(
                train_ds,
                validation_data=val_ds,
                callbacks=[*cb.training_callbacks(cfg, run_dir), *schedule_callbacks, *callbacks,
                           *([logger] if logger is not None else [])],
                verbose=keras_verbosity() if verbose is None else verbose,
                initial_epoch=initial_epoch,
                **fit_kwargs,
            )
            _stop_if_diverged(history, run_dir, cfg)
            metrics = _record(cfg, run_dir, splits, run, speed_settings(model))
            exit_code = 0
        finally:
            tracking.finish(run, exit_code)
        shutil.rmtree(run_dir / runs.BACKUP_DIR, ignore_errors=True)
    return metrics


def _refuse_foreign_folder(run_dir):
    """FerError unless `run_dir` holds no file a run writes, or holds a run of ours (its config.json has
    our config's keys): a user's own config.json, history.csv or plots/ are never overwritten."""
    written = (runs.CONFIG_FILE, runs.HISTORY_FILE, runs.MODEL_FILE, runs.BACKUP_DIR, runs.REPORT_FILE,
               runs.PLOTS_DIR, runs.SAVEDMODEL_DIR, runs.METRICS_FILE)
    clashing = [name for name in written if (run_dir / name).exists()]
    if not clashing:
        return
    try:
        saved = runs.read_config(run_dir) if (run_dir / runs.CONFIG_FILE).is_file() else None
    except FerError:  # not JSON: not ours either
        saved = None
    if not (isinstance(saved, dict) and {"model", "seed", "epochs"} <= set(saved)):
        raise FerError(f"{run_dir} is not a fer_keras run folder but holds {', '.join(clashing)}, which training "
                       "would overwrite; choose a new or empty output folder")


def _stop_if_diverged(history, run_dir, cfg):
    """After `TerminateOnNaN` stopped `fit`: drop the backup (it holds the broken weights) and fail
    with what happened and what is kept."""
    losses = history.history.get("loss", [])
    if not losses or math.isfinite(losses[-1]):
        return
    shutil.rmtree(run_dir / runs.BACKUP_DIR, ignore_errors=True)
    model_path = run_dir / runs.MODEL_FILE
    kept = (
        f"the last good checkpoint is kept at {model_path}"
        if model_path.exists()
        else "no epoch finished before it, so there is no checkpoint"
    )
    raise DivergedError(
        f"training stopped: the loss became NaN or infinite in epoch {history.epoch[-1] + 1} "
        f"(learning_rate {cfg['learning_rate']:g} may be too high); {kept}"
    )


def _record(cfg, run_dir, splits, run, speed):
    """Evaluate the best checkpoint on every split and write the run's record (report, plots,
    SavedModel, W&B summary, samples and Grad-CAM, metrics.json last); return metrics.json's content."""
    start = time.perf_counter()
    model_path = run_dir / runs.MODEL_FILE
    model = load_keras_model(model_path)
    results = evaluate_model(model, splits, batch_size=max(256, cfg["batch_size"]), verbose=0)
    _, rows = runs.read_history(run_dir)
    best = max(rows, key=lambda r: float(r["val_accuracy"]), default=None)
    extra = {
        "model": cfg["model"],
        "params": int(model.count_params()),
        "macs": count_macs(model),
        "precision": keras.mixed_precision.global_policy().name,  # what `auto` became here
        "machine": machine_summary(),
        "epochs": len(rows),
        "best_epoch": int(best["epoch"]) + 1 if best else None,
        "train_time": sum(float(r["epoch_time"]) for r in rows),  # every epoch, across resumes
        "speed": {**speed, "images_per_second": images_per_second(len(splits["train"]), rows)},
    }
    if cfg["overfit_check"]:
        accuracy = results["train"]["accuracy"]
        # Training-mode accuracy (batch statistics, as PyTorch notebooks report it) per epoch: the
        # first epoch at 100%, beside the final evaluation with the moving statistics.
        reached = [int(r["epoch"]) + 1 for r in rows if float(r.get("accuracy", 0)) >= 1.0]
        extra["overfit_check"] = {"samples": cfg["overfit_check"], "train_accuracy": accuracy,
                                  "reached_100": accuracy >= 1.0,
                                  "first_epoch_at_100_in_training": reached[0] if reached else None}
    plot_history(run_dir / runs.HISTORY_FILE, run_dir / runs.PLOTS_DIR / runs.HISTORY_PLOT)
    if cfg["export"]:
        export_savedmodel(model, run_dir / runs.SAVEDMODEL_DIR, model_name=cfg["model"])
    extra["wall_time"] = extra["train_time"] + time.perf_counter() - start
    tracking.log_results(run, results, model_path=model_path, extra=extra)
    tracking.log_trained_model(run, model, splits)
    metrics = write_evaluation(run_dir, results, extra)
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
        first = check["first_epoch_at_100_in_training"]
        print(f"overfit check: training accuracy {check['train_accuracy']:.2%} on {check['samples']} "
              f"samples: {verdict} 100%" + (f" (100% in training mode from epoch {first})" if first else ""))
    print(f"{extra['epochs']} epochs, {extra['wall_time']:.0f} s; run folder: {run_dir}")
