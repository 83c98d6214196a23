"""A search's results: every trial sorted by the objective (summary.csv, summary.md) and the best
trial's full training config (best_config.json, for `python -m fer_keras.train --config`).

Built from the search folder's files alone, so `python -m tuning.summary DIR/SEARCH` also reports
on a search that is still running or was run elsewhere.
"""

import csv
import json
import math
from pathlib import Path

from keras_tuner.engine.trial import Trial

from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.errors import FerError
from fer_keras.core import runs
from fer_keras.core.io import atomic_path, write_json, write_text
from fer_keras.core.tables import fmt, markdown_table
from tuning.spaces import SearchSpace

STATE_FILE = "space.json"
METRICS = ("val_accuracy", "val_f1_score", "val_loss", "accuracy", "loss")
HYPERBAND = {"tuner/bracket": "bracket", "tuner/round": "round", "tuner/trial_id": "continues"}


def load_state(search_dir):
    """The search's settings as `tuning.search` saved them in space.json."""
    path = Path(search_dir) / STATE_FILE
    if not path.exists():
        raise FerError(f"{search_dir} is not a search folder (no {STATE_FILE})")
    return json.loads(path.read_text())


def load_trials(search_dir):
    """Every trial of the search folder (KerasTuner's trial.json files), by trial id."""
    trials = [Trial.load(str(p)) for p in sorted(Path(search_dir).glob("trial_*/trial.json"))]
    return {t.trial_id: t for t in trials}


def trial_rows(search_dir, state):
    """One row per trial, best first: rank, status, metrics at the trial's best epoch, epochs,
    the searched hyperparameters, Hyperband bracket/round, the tuner that ran it, and from the
    trial's metrics.json its parameter count, train-val gap, test accuracy and wall time.
    Trials without a result (failed, running) come last, unranked."""
    space = SearchSpace.from_json(state["space"])
    objective = state["objective"]
    rows = [_row(Path(search_dir), t, space, objective, state["max_epochs"]) for t in load_trials(search_dir).values()]
    scored = sorted((r for r in rows if _finite(r[objective])), key=lambda r: -r[objective])
    for rank, row in enumerate(scored, 1):
        row["rank"] = rank
    return scored + sorted((r for r in rows if not _finite(r[objective])), key=lambda r: r["trial"])


def _row(search_dir, trial, space, objective, max_epochs):
    values = trial.hyperparameters.values
    completed = trial.status == "COMPLETED"
    row = {"rank": None, "trial": trial.trial_id, "status": trial.status}
    for name in dict.fromkeys((objective, *METRICS)):
        row[name] = trial.metrics.get_last_value(name) if completed and trial.metrics.exists(name) else None
    initial = values.get("tuner/initial_epoch", 0)
    row["best_epoch"] = initial + trial.best_step + 1 if completed and trial.best_step is not None else None
    row["epochs"] = values.get("tuner/epochs", max_epochs)
    row.update({name: values.get(name, dim.args["default"]) for name, dim in space.dims.items()})
    row.update({column: values.get(key) for key, column in HYPERBAND.items() if "tuner/bracket" in values})
    trial_dir = search_dir / f"trial_{trial.trial_id}"
    record, metrics = runs.read_trial(trial_dir), runs.read_metrics(trial_dir) or {}
    row["tuner_id"] = record.get("tuner_id")
    row["params"] = metrics.get("params")
    row["train_val_gap"] = metrics.get("train_val_gap")
    row["test_accuracy"] = metrics.get("test", {}).get("accuracy")
    row["wall_time_s"] = round(metrics["wall_time"], 1) if "wall_time" in metrics else None
    return row


def best_config(state, row):
    """The full training config of trial `row`, ready for `python -m fer_keras.train --config`:
    its hyperparameters and epochs, run folder and W&B naming left to the new run."""
    space = SearchSpace.from_json(state["space"])
    values = {name: row[name] for name in space.dims}
    return {**space.trial_config(values, row["epochs"]), "out": None, "name": None, "group": None}


def write_summary(search_dir, state=None):
    """Write summary.csv, summary.md and (when a trial completed) best_config.json into the search
    folder; return the rows, best first."""
    search_dir = Path(search_dir)
    state = state or load_state(search_dir)
    rows = trial_rows(search_dir, state)
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["rank", "trial", "status"]
    with atomic_path(search_dir / "summary.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    write_text(search_dir / "summary.md", _markdown(state, rows, columns))
    if rows and rows[0]["rank"] == 1:
        write_json(search_dir / "best_config.json", best_config(state, rows[0]))
    return rows


def _markdown(state, rows, columns):
    best = rows[0] if rows and rows[0]["rank"] == 1 else None
    done = sum(r["status"] == "COMPLETED" for r in rows)
    lines = [
        f"# Search `{state['search']}`",
        "",
        f"{state['tuner']} search of `{state['space']['base']['model']}`"
        + (f" (candidates: {', '.join(state['space']['models'])})" if len(state["space"]["models"]) > 1 else "")
        + f", objective {state['objective']} (max), max {state['max_epochs']} epochs per trial; "
        f"{len(rows)} trials, {done} completed.",
        "",
    ]
    if best:
        lines += [f"Best: trial {best['trial']}, {state['objective']} {fmt(best[state['objective']])}; "
                  "retrain it with `python -m fer_keras.train --config best_config.json`.", ""]
    return "\n".join(lines) + "\n" + markdown_table(rows, columns)


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


@user_errors
def main(argv=None):
    parser = ArgumentParser(
        prog="python -m tuning.summary",
        description="Rewrite summary.csv, summary.md and best_config.json of a search folder from its files.",
    )
    parser.add_argument("search_dir", metavar="DIR/SEARCH", help="the search folder (--out DIR --name SEARCH)")
    args = parser.parse_args(argv)
    rows = write_summary(args.search_dir)
    print(f"{len(rows)} trials summarised in {Path(args.search_dir) / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
