"""The KerasTuner hypermodel and tuners: every trial is a `fer_keras.training.runner.run_training` run.

A trial trains exactly like `python -m fer_keras.train` (same datasets, model, optimizer, schedule,
run-folder callbacks and record) with its trial folder as run folder, as its own W&B run. Only the
hyperparameters differ, from `tuning.spaces`. The trial's best checkpoint (`model.keras`) is the one
KerasTuner reloads, for Hyperband's continued trials and `get_best_models`. A trial whose settings
another search or series in the same folder already trained from scratch reuses that run.
"""

import functools
import json
import shutil
import time
from pathlib import Path

import keras
import keras_tuner as kt

from fer_keras.training import runner
from fer_keras.training import parts
from fer_keras.training import tracking
from fer_keras.training.precision import machine_summary
from fer_keras.errors import DivergedError
from fer_keras.core.io import atomic_path, write_json, write_text
from fer_keras.core import runs
from fer_keras.core.lock import LOCK_FILE, folder_lock
from fer_keras.core.private_api import TunerCallback, kt_stateful
from fer_keras.modelio.saving import load_keras_model

# kt.Objective with explicit directions: a bare "val_f1_score" would be minimised.
OBJECTIVES = {name: kt.Objective(name, "max") for name in ("val_accuracy", "val_f1_score")}
IDLE_WAIT = 1.0  # seconds a worker waits before asking an oracle that had no trial for it


class FerHyperModel(kt.HyperModel):
    """A trial's config from its hyperparameters: `space.trial_config` of the trial's values."""

    def __init__(self, space, max_epochs):
        super().__init__(name="fer_keras")
        self.space, self.max_epochs = space, max_epochs
        self._splits = {}

    def splits_for(self, cfg):
        """The data of `cfg`, read once per distinct data setting (a chief that only serves the oracle
        never reads it; a study's repeats with other seeds sample their --limit anew)."""
        key = json.dumps({k: cfg[k] for k in DATA_KEYS}, sort_keys=True)
        if key not in self._splits:
            self._splits[key] = parts.load_splits(cfg)
        return self._splits[key]

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def trial_config(self, hp):
        """The trial's full training config; Hyperband sets its epochs per round."""
        return self.space.trial_config(self.space.declare(hp), hp.values.get("tuner/epochs", self.max_epochs))

    def build(self, hp):
        cfg = self.trial_config(hp)
        splits = self.splits_for(cfg)
        return parts.build_compiled_model(cfg, parts.steps_per_epoch(cfg, splits), splits["train"].labels)[0]


# Config keys that decide which faces a trial trains and validates on.
DATA_KEYS = ("data", "limit", "val_fraction", "split", "folds", "fold", "seed", "overfit_check")


def save_state_atomically(self, fname):
    """KerasTuner's `Stateful.save` (tuner, oracle and trial JSON), written atomically; `make_tuner` installs it.
    KerasTuner writes in place, so a study killed mid-write left a truncated file its resume could not read."""
    text = json.dumps(self.get_state())
    write_text(fname, text)
    return text


class TrialRunner:
    """What every search algorithm adds to KerasTuner's trials (mixed in before the kt class).

    `run_trial` runs the trial through `run_training` in the trial folder, under the trial's W&B run
    (id `<search>-<trial>`, so a resumed trial continues its run). The objective is read from the
    trial's history.csv, which also holds the epochs done before an interruption.
    """

    wandb_group = None  # the trials' W&B group; None: the search name (a study sets study/series)
    _unanswered = 0  # trial requests since the last trial began

    def pre_create_trial(self):
        """Pause before asking again when the oracle answered the last request with no trial yet (a
        worker while others finish a grid's last trials): KerasTuner would re-ask at once, spinning."""
        if self._unanswered:
            time.sleep(IDLE_WAIT)
        self._unanswered += 1

    def on_trial_begin(self, trial):
        self._unanswered = 0
        super().on_trial_begin(trial)

    def _populate_initial_space(self):
        """Declare the space without building a model: KerasTuner builds one to discover
        conditional hyperparameters, and this space has none."""
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def _get_checkpoint_fname(self, trial_id):
        """The trial's best checkpoint, which `run_training` writes (KerasTuner would write a second)."""
        return str(Path(self.get_trial_dir(trial_id)) / runs.MODEL_FILE)

    def load_model(self, trial):
        return load_keras_model(self._get_checkpoint_fname(trial.trial_id))

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        cfg = {**self.hypermodel.trial_config(hp), "out": str(trial_dir), "export": False}
        wandb_id = f"{self.project_name}-{trial.trial_id}"
        values = {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}
        previous = hp.values.get("tuner/trial_id")  # Hyperband: continue that trial's best weights
        write_json(trial_dir / runs.TRIAL_FILE, {"tuner_id": self.tuner_id, "wandb_id": wandb_id, "values": values,
                                                 **({"continued_from": previous} if previous else {})})
        write_text(trial_dir / runs.WANDB_ID_FILE, wandb_id + "\n")  # the W&B run id tracking.start_run takes
        print(f"trial {trial.trial_id} runs on tuner {self.tuner_id}")
        twin = None if previous or runs.is_complete(trial_dir) else finished_twin(cfg, self.directory)
        if twin is not None:
            reuse_run(twin, trial_dir, cfg, self._wandb_config(trial, cfg, wandb_id))
            return trial_history(trial_dir)
        keras.backend.clear_session()  # one process trains many models
        try:
            runner.run_training(
                cfg, trial_dir,
                strategy=self.distribution_strategy,
                splits=self.hypermodel.splits_for(cfg),
                initial_weights=self._get_checkpoint_fname(previous) if previous else None,
                initial_epoch=hp.values.get("tuner/initial_epoch", 0),
                callbacks=[TunerCallback(self, trial)],
                wandb_config=self._wandb_config(trial, cfg, wandb_id),
                verbose=kwargs.get("verbose"),
            )
        except DivergedError as exc:  # the search goes on with the next trial
            raise kt.errors.FailedTrialError(f"trial {trial.trial_id}: {exc}") from None
        return trial_history(trial_dir)

    def _wandb_config(self, trial, cfg, run_id):
        """What the trial's W&B run records: its config, grouped under the search, with its values."""
        return {
            **cfg,
            "group": self.wandb_group or self.project_name,
            "name": run_id,
            "tags": [*cfg["tags"], "tuning"],
            "tuning": {"search": self.project_name, "trial_id": trial.trial_id, "tuner_id": self.tuner_id,
                       "hyperparameters": dict(trial.hyperparameters.values)},
        }


def finished_twin(cfg, searches):
    """A finished trial in `searches` (any search, or any series of a study) that trained exactly `cfg`'s
    settings from scratch on this kind of machine, or None: series sharing a setting (a study's base point)
    train it once."""
    machine = machine_summary()
    for run_dir in sorted(Path(searches).glob("*/trial_*")):
        if (runs.is_complete(run_dir) and not {"reused_from", "continued_from"} & set(runs.read_trial(run_dir))
                and not runs.changed_settings(runs.read_config(run_dir), cfg)
                and (runs.read_metrics(run_dir) or {}).get("machine") == machine):
            return run_dir
    return None


def reuse_run(source, trial_dir, cfg, wandb_config):
    """Fill `trial_dir` with the finished run `source` (checkpoint, history, report, plots; metrics.json
    last, which marks it complete), record where it came from, and log it as the trial's W&B run."""
    own = {runs.CONFIG_FILE, runs.TRIAL_FILE, runs.WANDB_ID_FILE, "wandb", runs.BACKUP_DIR, runs.METRICS_FILE,
           LOCK_FILE, "trial.json"}
    with folder_lock(trial_dir, "training run"):
        shutil.rmtree(trial_dir / runs.BACKUP_DIR, ignore_errors=True)  # epochs of its own, if any, give way
        write_json(trial_dir / runs.CONFIG_FILE, cfg)
        write_json(trial_dir / runs.TRIAL_FILE, {**runs.read_trial(trial_dir), "reused_from": str(source)})
        for item in Path(source).iterdir():
            if item.name in own:
                continue
            if item.is_dir():
                shutil.copytree(item, trial_dir / item.name, dirs_exist_ok=True)
            else:
                with atomic_path(trial_dir / item.name) as tmp:
                    shutil.copyfile(item, tmp)
        tracking.log_reused_run(wandb_config, trial_dir, source)
        with atomic_path(trial_dir / runs.METRICS_FILE) as tmp:
            shutil.copyfile(Path(source) / runs.METRICS_FILE, tmp)
    print(f"trial {trial_dir.name}: the same settings ran as {source}; its run is reused, not trained again")


def trial_history(trial_dir):
    """The trial's epochs as a Keras `History`, from its history.csv (all epochs of the trial,
    including those done before an interruption that BackupAndRestore resumed from)."""
    _, rows = runs.read_history(trial_dir)
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


class ResumableGridOracle(kt.oracles.GridSearchOracle):
    """KerasTuner's grid oracle, resumable after a kill: it keeps the order of the combinations it
    tried in memory only, so a resumed grid failed (KeyError) going on from an earlier trial. Reload
    rebuilds that order from the trials on disk and lets every trial propose its successor again
    (combinations already tried are skipped, as in an uninterrupted search)."""

    def reload(self):
        super().reload()
        by_values = functools.cmp_to_key(
            lambda a, b: self._compare(self.trials[a].hyperparameters.values, self.trials[b].hyperparameters.values))
        ordered = sorted(self.trials, key=by_values)
        for trial_id in ordered:
            self._ordered_ids.insert(trial_id)
        self._populate_next = [t for t in ordered if t not in self._retry_queue]


class GridSearch(TrialRunner, kt.Tuner):
    """Every combination of exact values (`--grid`, a study's variants and seeds), each trained once."""

    def __init__(self, hypermodel, *, objective, max_trials=None, seed=None, **kwargs):
        oracle = ResumableGridOracle(objective=objective, max_trials=max_trials, seed=seed)
        super().__init__(oracle, hypermodel, **kwargs)


TUNERS = {"hyperband": HyperbandSearch, "random": RandomSearch, "bayesian": BayesianSearch, "grid": GridSearch}


def make_tuner(kind, hypermodel, *, directory, name, objective="val_accuracy", factor=3, max_trials=10,
               strategy=None, seed=0):
    """The `kind` tuner over `hypermodel`, resuming `directory/name` if it exists.

    `strategy`: a `tf.distribute.Strategy` each trial trains under (None: the default).
    """
    kt_stateful.save = save_state_atomically
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
    return TUNERS[kind](max_trials=max_trials, **common)  # grid: None runs every combination
