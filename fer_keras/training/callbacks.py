"""Callbacks of a run folder: best checkpoint, resumable history, backup, early stop, NaN stop, Ctrl-C stop.

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

from fer_keras.core import runs
from fer_keras.core.cli import ctrl_c_pressed
from fer_keras.core.io import atomic_path
from fer_keras.data.augment import network_of

MONITOR = "val_accuracy"


def inference_model(model):
    """The trained network (without the training-only augmentation in front of it) as a plain functional
    model: saves without the optimizer, so the checkpoint is a small inference model that loads with
    nothing but the layers registered."""
    network = network_of(model)
    return keras.Model(network.input, network.output, name=network.name)


class EpochStats(keras.callbacks.Callback):
    """Add the learning rate and the epoch's wall time to the epoch logs (so history.csv has them)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["epoch_time"] = time.perf_counter() - self._start


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model to the run folder's model.keras whenever `monitor` beats the run's best so far,
    atomically.

    Epochs whose loss or monitor is not finite are never saved. On resume the best so far is read
    from the history of the epochs already done.
    """

    def __init__(self, run_dir, monitor=MONITOR, averaged=None):
        super().__init__()
        self.run_dir, self.monitor = Path(run_dir), monitor
        self.averaged = averaged  # the run's SwapEMAWeights: its swap puts in what validation scored
        self.best = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.best is None:
            _, done = runs.read_history(self.run_dir, before=epoch)
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
            with atomic_path(self.run_dir / runs.MODEL_FILE) as tmp:
                inference_model(self.model).save(tmp)
        finally:
            if self.averaged:
                self.averaged.on_test_end()


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """CSVLogger of the run folder's history.csv, in append mode, that first drops the rows of epochs
    a resumed run will redo.

    The file is opened at the first epoch, once `BackupAndRestore` has set where training resumes.
    """

    def __init__(self, run_dir):
        super().__init__(Path(run_dir) / runs.HISTORY_FILE, append=True)
        self._opened = False

    def on_train_begin(self, logs=None):
        self._opened = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._opened:
            self._opened = True
            _keep_epochs_before(Path(self.filename).parent, epoch)
            super().on_train_begin()


def _keep_epochs_before(run_dir, epoch):
    """Rewrite history.csv with only the rows of epochs before `epoch` (removed when none is left)."""
    fields, kept = runs.read_history(run_dir, before=epoch)
    path = run_dir / runs.HISTORY_FILE
    if not kept:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)


class StopOnCtrlC(keras.callbacks.Callback):
    """Stops training at the next batch after a Ctrl-C whose KeyboardInterrupt Python dropped
    (see `ctrl_c_pressed`), so the command still ends as interrupted and resumable."""

    def on_train_batch_end(self, batch, logs=None):
        if ctrl_c_pressed():
            raise KeyboardInterrupt


def training_callbacks(cfg, run_dir):
    """The run folder's callbacks, in the order they must see each epoch's logs."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    averaged = keras.callbacks.SwapEMAWeights() if cfg["ema"] else None
    callbacks = [
        StopOnCtrlC(),
        EpochStats(),
        keras.callbacks.TerminateOnNaN(),
        BestCheckpoint(run_dir, averaged=averaged),
        ResumableCSVLogger(run_dir),
        keras.callbacks.BackupAndRestore(
            str(run_dir / runs.BACKUP_DIR), double_checkpoint=True, delete_checkpoint=False
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
