"""The run folder: the name of every file a training run writes there, and the readers of its record.

A run folder holds config.json (the resolved config, written first), history.csv (one row per
finished epoch), model.keras (the best checkpoint), backup/ (the state an interrupted run resumes
from, removed at the end), wandb_id.txt and wandb/ (its W&B run), classification_report.txt,
plots/, savedmodel/ and, last, metrics.json, which marks the run complete. A tuning trial adds
run.json; `core.lock` keeps its lock file there. Nothing here imports TensorFlow.
"""

import csv
import json
import math
from pathlib import Path

from fer_keras.errors import FerError

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
MODEL_FILE = "model.keras"
BACKUP_DIR = "backup"
WANDB_ID_FILE = "wandb_id.txt"
REPORT_FILE = "classification_report.txt"
PLOTS_DIR = "plots"
HISTORY_PLOT = "history.png"
CONFUSION_PLOT = "confusion_matrix_{split}.png"
SAVEDMODEL_DIR = "savedmodel"
METRICS_FILE = "metrics.json"
# A tuning trial's record: the tuner that ran it, its W&B run id, its searched values, and the trial it
# continues (Hyperband) or the finished run it copies (the same settings trained by another series).
TRIAL_FILE = "run.json"
EVALUATION_DIR = "eval-{split}"  # `python -m fer_keras.evaluate`'s default output, inside the run folder
CROSS_VALIDATION_FILE = "cross_validation.json"  # beside the fold-<i> run folders of a cross-validation

# Config keys that change where a run lives and how it is tracked, not what it computes: a run
# resumes with other values of them, and comparisons of runs leave them out.
RESUMABLE = ("strategy", "wandb", "wandb_project", "group", "tags", "name", "out")


def _read_json(path, default=None):
    """The JSON content of `path`; `default` where there is no file; FerError naming an unreadable one."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FerError(f"{path} is not readable JSON: restore it, or choose another run folder") from None


def read_config(run_dir):
    """The run's resolved config (config.json); {} where there is none (a bare .keras file's folder)."""
    return _read_json(Path(run_dir) / CONFIG_FILE, {})


def read_metrics(run_dir):
    """The run's record (metrics.json); None while the run is not complete."""
    return _read_json(Path(run_dir) / METRICS_FILE)


def read_trial(run_dir):
    """A tuning trial's record (run.json); {} for a plain run."""
    return _read_json(Path(run_dir) / TRIAL_FILE, {})


def searched_values(run_dir):
    """The values a search gave the run (`variant`, `learning_rate`, ...); {} for a plain run."""
    return read_trial(run_dir).get("values", {})


def read_history(run_dir, before=None):
    """Header and complete rows (strings) of the run's history.csv (a row cut by a kill is dropped),
    optionally only the rows of epochs before `before`. `([], [])` when there is no file."""
    try:
        with open(Path(run_dir) / HISTORY_FILE, newline="") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if None not in r.values() and r["epoch"]]
            fields = reader.fieldnames or []
    except FileNotFoundError:
        return [], []
    return fields, [r for r in rows if before is None or int(r["epoch"]) < before]


def is_complete(run_dir):
    """Whether `run_dir` holds a finished run (metrics.json beside config.json)."""
    run_dir = Path(run_dir)
    return (run_dir / METRICS_FILE).exists() and (run_dir / CONFIG_FILE).exists()


def find_runs(paths):
    """Finished run folders named by or found (at any depth) under `paths`, each once."""
    runs = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise FerError(f"{path}: not a folder")
        found = [path] if is_complete(path) else sorted(p.parent for p in path.rglob(METRICS_FILE))
        found = [run for run in found if is_complete(run)]
        if not found:
            raise FerError(f"{path}: no finished run in it (no {METRICS_FILE} beside a {CONFIG_FILE})")
        runs += [run for run in found if run not in runs]
    return runs


def finished_run(run_dir, cfg):
    """metrics.json of a complete run of `cfg` in `run_dir`; None for a new or interrupted one, or one
    that never finished an epoch (nothing to protect: its settings are replaced).

    A folder holding finished epochs of other settings is refused: resuming it would mix two runs.
    Keys in `RESUMABLE` may differ.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists() or not _has_finished_epochs(run_dir):
        return None
    saved = read_config(run_dir)
    changed = changed_settings(saved, cfg)
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {cfg[k]!r}" for k in changed)
        raise FerError(
            f"run folder {run_dir} holds a run with other settings ({diffs}); "
            "resume it with the same settings or choose another output folder"
        )
    return read_metrics(run_dir)


def changed_settings(saved, cfg):
    """The keys of `cfg` whose values `saved` (another run's config) does not share, apart from RESUMABLE ones."""
    return sorted(k for k in cfg if k not in RESUMABLE and saved.get(k) != cfg[k])


def _has_finished_epochs(run_dir):
    """Whether an epoch ended with a finite loss here (a checkpoint, or a finite row of history)."""
    _, rows = read_history(run_dir)
    return (run_dir / MODEL_FILE).exists() or any(_finite(r.get("loss")) for r in rows)


def _finite(text):
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError):
        return False
