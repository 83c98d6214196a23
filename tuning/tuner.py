"""The KerasTuner hypermodel and tuners: every trial trains through `fer_keras.training`.

A trial builds, compiles and fits like `python -m fer_keras.train` (same datasets, model, optimizer,
schedule and run-folder callbacks, BackupAndRestore included) in its own trial folder, as its own
W&B run. Only the hyperparameters differ, from `tuning.spaces`.
"""

import functools
import math
import shutil
import time
from pathlib import Path

import keras
import keras_tuner as kt

from fer_keras import callbacks as cb
from fer_keras import tracking, training
from fer_keras.io import write_json, write_text
from fer_keras.optim import schedule_callbacks

# kt.Objective with explicit directions: a bare "val_f1_score" would be minimised.
OBJECTIVES = {name: kt.Objective(name, "max") for name in ("val_accuracy", "val_f1_score")}
RUN_FILE = "run.json"  # per trial: which tuner ran it, when, and its full training config


class FerHyperModel(kt.HyperModel):
    """Builds and fits one trial from its config: `space.trial_config` of the trial's values."""

    def __init__(self, space, max_epochs):
        super().__init__(name="fer_keras")
        self.space, self.max_epochs = space, max_epochs

    @functools.cached_property
    def splits(self):
        """The data, read on the first trial (a chief that only serves the oracle never reads it)."""
        return training.load_splits(self.space.base)

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def trial_config(self, hp):
        """The trial's full training config; Hyperband sets its epochs per round."""
        return self.space.trial_config(self.space.declare(hp), hp.values.get("tuner/epochs", self.max_epochs))

    def build(self, hp):
        cfg = self.trial_config(hp)
        keras.utils.set_random_seed(cfg["seed"])
        steps = training.steps_per_epoch(cfg, self.splits)
        return training.build_compiled_model(cfg, steps, self.splits["train"].labels)

    def fit(self, hp, model, *args, **kwargs):
        """Fit on the trial's own pipelines (batch size and augmentation are hyperparameters)."""
        train_ds, val_ds, fit_kwargs = training.make_datasets(self.trial_config(hp), self.splits)
        return model.fit(train_ds, validation_data=val_ds, **{**fit_kwargs, **kwargs})


class TrialRunner:
    """What every search algorithm adds to KerasTuner's trials (mixed in before the kt class).

    `run_trial` opens the trial's W&B run (id `<search>-<trial>`, so a resumed trial continues its
    run), adds the run-folder callbacks of `fer_keras.train` with the trial folder as run folder,
    then runs KerasTuner's own `run_trial`. The objective is read from the trial's history.csv,
    which also holds the epochs done before an interruption.
    """

    def _populate_initial_space(self):
        """Declare the space without building a model: KerasTuner builds one to discover
        conditional hyperparameters, and this space has none."""
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        cfg = self.hypermodel.trial_config(trial.hyperparameters)
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        record = {"tuner_id": self.tuner_id, "wandb_id": f"{self.project_name}-{trial.trial_id}",
                  "started": time.time(), "config": cfg}
        write_json(trial_dir / RUN_FILE, record)
        print(f"trial {trial.trial_id} runs on tuner {self.tuner_id}")
        run = self._start_wandb(trial, cfg, trial_dir, record["wandb_id"])
        callbacks = cb.training_callbacks(cfg, trial_dir) + schedule_callbacks(cfg)
        logger = tracking.metrics_logger(run)
        callbacks += [logger] if logger is not None else []
        exit_code = 1
        try:
            super().run_trial(trial, *args, callbacks=[*kwargs.pop("callbacks", []), *callbacks], **kwargs)
            history = trial_history(trial_dir)
            losses = history.history.get("loss", [])
            if not losses or not math.isfinite(losses[-1]):
                raise kt.errors.FailedTrialError(
                    f"trial {trial.trial_id} diverged (loss {losses[-1:]}) with learning_rate {cfg['learning_rate']}"
                )
            exit_code = 0
        finally:
            tracking.finish(run, exit_code)
        shutil.rmtree(trial_dir / cb.BACKUP_DIR, ignore_errors=True)
        write_json(trial_dir / RUN_FILE, {**record, "wall_time": time.time() - record["started"]})
        return history

    def _start_wandb(self, trial, cfg, trial_dir, run_id):
        """The trial's W&B run, grouped under the search, configured with the trial's config and
        hyperparameters (None when W&B is off or fails)."""
        write_text(trial_dir / tracking.ID_FILE, run_id + "\n")  # start_run takes its run id from here
        return tracking.start_run({
            **cfg,
            "out": str(trial_dir),
            "group": self.project_name,
            "name": run_id,
            "tags": [*cfg["tags"], "tuning"],
            "tuning": {"search": self.project_name, "trial_id": trial.trial_id, "tuner_id": self.tuner_id,
                       "hyperparameters": dict(trial.hyperparameters.values)},
        }, trial_dir)


def trial_history(trial_dir):
    """The trial's epochs as a Keras `History`, from its history.csv (all epochs of the trial,
    including those done before an interruption that BackupAndRestore resumed from)."""
    _, rows = cb.read_history(Path(trial_dir) / cb.HISTORY_FILE)
    history = keras.callbacks.History()
    history.epoch = [int(r["epoch"]) for r in rows]
    history.history = {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {}) if k != "epoch"}
    return history


class HyperbandSearch(TrialRunner, kt.Hyperband):
    """Hyperband (Li et al. 2018, http://jmlr.org/papers/v18/16-558.html) over fer_keras trials."""


class RandomSearch(TrialRunner, kt.RandomSearch):
    """Random search over fer_keras trials."""


class BayesianSearch(TrialRunner, kt.BayesianOptimization):
    """Gaussian-process Bayesian optimisation over fer_keras trials."""


TUNERS = {"hyperband": HyperbandSearch, "random": RandomSearch, "bayesian": BayesianSearch}


def make_tuner(kind, hypermodel, *, directory, name, objective="val_accuracy", factor=3, max_trials=10,
               strategy=None, seed=0):
    """The `kind` tuner over `hypermodel`, resuming `directory/name` if it exists.

    `strategy`: a `tf.distribute.Strategy` each trial trains under (None: the default).
    """
    common = {
        "hypermodel": hypermodel,
        "objective": OBJECTIVES[objective],
        "seed": seed,
        "directory": str(directory),
        "project_name": name,
        "overwrite": False,
        "distribution_strategy": strategy,
    }
    if kind == "hyperband":
        return HyperbandSearch(max_epochs=hypermodel.max_epochs, factor=factor, **common)
    return TUNERS[kind](max_trials=max_trials, **common)
