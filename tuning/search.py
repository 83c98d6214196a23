"""Hyperparameter search over fer_keras models with KerasTuner (Hyperband, random or Bayesian).

`python -m tuning.search --model NAME --tuner hyperband --max-epochs 30 --factor 3 --data PATH
--out DIR --name SEARCH` leaves DIR/SEARCH/summary.csv, summary.md and best_config.json. Running the
same command again resumes the search; trials already finished are not run again.
"""

import contextlib
import json
import re
from pathlib import Path

from fer_keras.core.runs import RESUMABLE
from fer_keras.training import config as config_lib
from fer_keras.core.cli import ArgumentParser, keras_verbosity, user_errors
from fer_keras.training.choices import STRATEGIES
from fer_keras.training.distribute import get_strategy
from fer_keras.errors import FerError
from fer_keras.core.io import write_json
from fer_keras.core.lock import folder_lock
from tuning import distributed
from tuning.spaces import SearchSpace
from tuning.summary import STATE_FILE, write_summary
from tuning.tuner import OBJECTIVES, TUNERS, FerHyperModel, make_tuner

TRIAL_STRATEGIES = tuple(s for s in STRATEGIES if s != "multi_worker")  # one process per trial
DEFAULT_MAX_TRIALS = 10
DEFAULT_FACTOR = 3
# Options that a search sets itself: per trial (epochs, run folder, W&B name, no export) or by its
# own flags (several --model candidates).
NOT_BASE_FLAGS = ("model", "epochs", "out", "name", "export", "overfit_check")


def build_parser():
    parser = ArgumentParser(
        prog="python -m tuning.search",
        description="Search hyperparameters of a fer_keras model with KerasTuner; every trial trains "
        "like fer_keras.training.train and is its own W&B run. Rerun the same command to resume. The base "
        "config resolves like fer_keras.training.train's: defaults < --recipe < --config < --set < flags.",
    )
    search = parser.add_argument_group("search")
    search.add_argument("--model", nargs="+", metavar="NAME", dest="models",
                        help="architecture; several names make the architecture a searched dimension "
                        "(default: the recipe's/config's model, else simple_cnn)")
    search.add_argument("--tuner", choices=tuple(TUNERS), default="hyperband", help="search algorithm")
    search.add_argument("--max-epochs", type=int, required=True, metavar="N",
                        help="epochs of the longest trial (every trial's for random and bayesian)")
    search.add_argument("--factor", type=int, metavar="F", help=f"Hyperband reduction factor (default {DEFAULT_FACTOR})")
    search.add_argument("--max-trials", type=int, metavar="N",
                        help=f"trials of a random or bayesian search (default {DEFAULT_MAX_TRIALS}); "
                        "may grow when resuming; a grid search runs every combination unless capped")
    search.add_argument("--grid", action="append", metavar="KEY=V1,V2,...", default=[],
                        help="exact values of one training option or builder hyperparameter (repeat for "
                        "more keys); --tuner grid trains every combination once, e.g. --grid "
                        "learning_rate=1e-4,1e-3,1e-2 --grid widths=[32,64],[64,128]")
    search.add_argument("--objective", choices=tuple(OBJECTIVES), default="val_accuracy",
                        help="validation metric to maximise (val_f1_score: macro F1)")
    search.add_argument("--only", nargs="+", metavar="PARAM",
                        help="search only these hyperparameters (e.g. learning_rate, or model with "
                        "several --model); the others keep the base config (see --dry-run)")
    search.add_argument("--out", default="searches", metavar="DIR", dest="searches",
                        help="folder of searches (default: searches)")
    search.add_argument("--name", required=True, metavar="SEARCH", dest="search",
                        help="search name: folder DIR/SEARCH and W&B group; reuse it to resume")
    search.add_argument("--dry-run", action="store_true", help="print the search space and exit")
    config_lib.add_option_flags(parser.add_argument_group("base training config"), exclude=NOT_BASE_FLAGS)
    return parser


def base_config(args):
    """The base config, resolved like `fer_keras.training.train`'s, with the first --model (or grid model)."""
    flags, config_file, assignments = config_lib.options_from_args(args)
    models = parse_grid(args.grid).get("model") or args.models
    if models:
        flags["model"] = models[0]
    return config_lib.resolve_config(flags, config_file, assignments)


def parse_grid(items):
    """`["learning_rate=1e-4,1e-3", "widths=[32,64],[64]"]` -> {"learning_rate": [0.0001, 0.001],
    "widths": [[32, 64], [64]]}: values split at top-level commas, read like --set values."""
    grid = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FerError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        if key in grid:
            raise FerError(f"--grid {key} is given twice: list all its values in one --grid")
        read = (lambda t: config_lib.option_value(key, t)) if key in config_lib.OPTIONS else config_lib.coerce
        grid[key] = [read(token) for token in _top_level_split(text)]
    return grid


def _top_level_split(text):
    """`text` split at commas outside brackets and braces, each part stripped."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def search_state(name, space, *, tuner, max_epochs, objective="val_accuracy", factor=None):
    """What identifies a search: resuming with anything else would mix two searches."""
    return {
        "search": name,
        "tuner": tuner,
        "objective": objective,
        "max_epochs": max_epochs,
        "factor": factor if tuner == "hyperband" else None,
        "space": space.to_json(),
    }


def check_state(search_dir, state):
    """Save the search's settings in space.json; refuse to resume one started with other settings."""
    path = Path(search_dir) / STATE_FILE
    if path.exists():
        changed = _changes(json.loads(path.read_text()), state)
        if changed:
            raise FerError(
                f"search {search_dir} was started with other settings ({'; '.join(changed)}): "
                "rerun it with its settings to resume it, or start a new search with another --name"
            )
    write_json(path, state)


def _changes(saved, current, prefix=""):
    """'key: old -> new' for every differing leaf, except the base config's resumable keys."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        if prefix == "space.base." and key in RESUMABLE:
            continue
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def check_args(args):
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.search):
        raise FerError(f"--name {args.search!r}: use letters, digits, '-' and '_' (it names a folder and W&B runs)")
    if args.max_epochs < 1:
        raise FerError("--max-epochs must be at least 1")
    if args.tuner == "hyperband":
        if args.max_trials is not None:
            raise FerError("--max-trials is for random and bayesian: Hyperband's trials follow from "
                           "--max-epochs and --factor")
        args.factor = args.factor or DEFAULT_FACTOR
        if args.factor < 2:
            raise FerError("--factor must be at least 2")
    elif args.factor is not None:
        raise FerError("--factor is for --tuner hyperband")
    if (args.tuner == "grid") != bool(args.grid):
        raise FerError("--tuner grid and --grid go together: a grid search needs its values, and --grid "
                       "values are searched only by --tuner grid")


def run_search(args):
    """Run (or resume) the search; return the summary rows, best first (None on a worker)."""
    check_args(args)
    base = base_config(args)
    space = SearchSpace(base, models=args.models, only=args.only, grid=parse_grid(args.grid))
    state = search_state(args.search, space, tuner=args.tuner, max_epochs=args.max_epochs, objective=args.objective,
                         factor=args.factor)
    if args.dry_run:
        print(json.dumps({k: v for k, v in state.items() if k != "space"} | {"dims": state["space"]["dims"]}, indent=2))
        return None
    rows = search_space(space, state, Path(args.searches), args.search, tuner=args.tuner, max_epochs=args.max_epochs,
                        objective=args.objective, factor=args.factor,
                        max_trials=args.max_trials if args.tuner == "grid" else args.max_trials or DEFAULT_MAX_TRIALS)
    if rows is not None:
        _report(Path(args.searches) / args.search, rows, args.objective)
    return rows


def search_space(space, state, searches, name, *, tuner, max_epochs, objective="val_accuracy", factor=None,
                 max_trials=None, wandb_group=None):
    """Run (or resume) the search of `space` in `searches/name`: the lock, the saved settings, the
    tuner (distributed as `KERASTUNER_*` say), the summary. Returns its rows (None on a worker)."""
    base = space.base
    if base["strategy"] not in TRIAL_STRATEGIES:
        raise FerError("strategy 'multi_worker' cannot train single trials: KerasTuner gives each process "
                       "its own trials; spread trials over machines with KERASTUNER_* (see tuning/distributed.py)")
    role = distributed.role()
    strategy = get_strategy(base["strategy"])  # before TensorFlow starts (it may split the CPU)
    search_dir = searches / name
    # Workers share the folder with their chief, which holds the lock; each trial folder has its own.
    with folder_lock(search_dir, "search") if role != "worker" else contextlib.nullcontext():
        check_state(search_dir, state)
        print(distributed.describe())
        hypermodel = FerHyperModel(space, max_epochs)
        if role != "chief":
            hypermodel.splits_for(base)  # bad data fails here, once, not in every trial
        search = make_tuner(
            tuner, hypermodel, directory=searches, name=name, objective=objective, factor=factor,
            max_trials=max_trials, strategy=None if base["strategy"] == "default" else strategy, seed=base["seed"],
        )
        search.wandb_group = wandb_group
        if role == "chief":
            distributed.serve(search, verbose=keras_verbosity())
        else:
            search.search(verbose=keras_verbosity())
        if role == "worker":
            print(f"{distributed.describe()}: no trials left")
            return None
        return write_summary(search_dir, state)


def _report(search_dir, rows, objective):
    done = [r for r in rows if r["rank"] is not None]
    print(f"{len(rows)} trials, {len(done)} completed; summary: {search_dir / 'summary.md'}")
    if not done:
        raise FerError(f"no trial of {search_dir} completed: see the messages in its trial_*/trial.json")
    best = done[0]
    print(f"best: trial {best['trial']} with {objective} {best[objective]:.4f}; retrain it with\n"
          f"  python -m fer_keras.train --config {search_dir / 'best_config.json'}")


@user_errors
def main(argv=None):
    run_search(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
