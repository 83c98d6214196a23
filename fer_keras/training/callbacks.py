"""Callbacks of a run folder: best checkpoint, resumable history, backup, early stop, NaN stop.

A run killed at any point resumes from its last completed epoch (Keras `BackupAndRestore`: weights,
optimizer state and step count); history.csv then holds each epoch once and the checkpoint keeps
the best epoch of the whole run. Early stopping's and reduce-on-plateau's patience counters start
again on resume. With weight averaging (`ema`), validation and the checkpoint use the averaged weights.
"""

import csv
import math
import time
from pathlib import Path

import keras

from fer_keras.core.io import atomic_path
from fer_keras.modelio.saving import MODEL_FILE

MONITOR = "val_accuracy"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"


def read_history(path, before=None):
    """Header and complete rows of a CSVLogger file (a row cut by a kill is dropped), optionally only
    the rows of epochs before `before`. `([], [])` when there is no file."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if None not in r.values() and r["epoch"]]
            fields = reader.fieldnames or []
    except FileNotFoundError:
        return [], []
    return fields, [r for r in rows if before is None or int(r["epoch"]) < before]


def inference_model(model):
    """The same layers and weights as a plain functional model: saves without the optimizer, so the
    checkpoint is a small inference model that loads with nothing but the layers registered."""
    return keras.Model(model.input, model.output, name=model.name)


class EpochStats(keras.callbacks.Callback):
    """Add the learning rate and the epoch's wall time to the epoch logs (so history.csv has them)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["epoch_time"] = time.perf_counter() - self._start


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model whenever `monitor` beats the run's best so far, atomically.

    Epochs whose loss or monitor is not finite are never saved. On resume the best so far is read
    from the history of the epochs already done.
    """

    def __init__(self, path, history_path, monitor=MONITOR, averaged=None):
        super().__init__()
        self.path, self.history_path, self.monitor = path, history_path, monitor
        self.averaged = averaged  # the run's SwapEMAWeights: its swap puts in what validation scored
        self.best = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.best is None:
            _, done = read_history(self.history_path, before=epoch)
            done = [float(r[self.monitor]) for r in done if self.monitor in r]
            self.best = max((v for v in done if math.isfinite(v)), default=-math.inf)

    def on_epoch_end(self, epoch, logs=None):
        value, loss = logs.get(self.monitor), logs.get("loss")
        if value is None or not (math.isfinite(value) and math.isfinite(loss)) or value <= self.best:
            return
        self.best = value
        if self.averaged:
            self.averaged.on_test_begin()
        try:
            with atomic_path(self.path) as tmp:
                inference_model(self.model).save(tmp)
        finally:
            if self.averaged:
                self.averaged.on_test_end()


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """CSVLogger in append mode that first drops the rows of epochs a resumed run will redo.

    The file is opened at the first epoch, once `BackupAndRestore` has set where training resumes.
    """

    def __init__(self, filename):
        super().__init__(filename, append=True)
        self._opened = False

    def on_train_begin(self, logs=None):
        self._opened = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._opened:
            self._opened = True
            _keep_epochs_before(Path(self.filename), epoch)
            super().on_train_begin()


def _keep_epochs_before(path, epoch):
    """Rewrite history.csv with only the rows of epochs before `epoch` (removed when none is left)."""
    fields, kept = read_history(path, before=epoch)
    if not kept:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)


def training_callbacks(cfg, run_dir):
    """The run folder's callbacks, in the order they must see each epoch's logs."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    averaged = keras.callbacks.SwapEMAWeights() if cfg["ema"] else None
    callbacks = [
        EpochStats(),
        keras.callbacks.TerminateOnNaN(),
        BestCheckpoint(run_dir / MODEL_FILE, run_dir / HISTORY_FILE, averaged=averaged),
        ResumableCSVLogger(run_dir / HISTORY_FILE),
        keras.callbacks.BackupAndRestore(
            str(run_dir / BACKUP_DIR), double_checkpoint=True, delete_checkpoint=False
        ),
    ]
    if averaged:
        callbacks.append(averaged)
    if cfg["early_stopping"]:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=MONITOR, mode="max", patience=cfg["early_stopping"], restore_best_weights=True
            )
        )
    return callbacks
