"""Hyperparameter search over fer_keras models with KerasTuner (Hyperband, random or Bayesian).

`python -m tuning.search --model NAME --tuner hyperband --max-epochs 30 --factor 3 --data PATH
--out DIR --name SEARCH` leaves DIR/SEARCH/summary.csv, summary.md and best_config.json. Running the
same command again resumes the search; trials already finished are not run again.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from fer_keras import config as config_lib
from fer_keras.cli import keras_verbosity, user_errors
from fer_keras.distribute import STRATEGIES, get_strategy
from fer_keras.errors import FerError
from fer_keras.io import write_json
from tuning import distributed
from tuning.spaces import SearchSpace
from tuning.summary import STATE_FILE, write_summary
from tuning.tuner import OBJECTIVES, TUNERS, FerHyperModel, make_tuner

TRIAL_STRATEGIES = tuple(s for s in STRATEGIES if s != "multi_worker")  # one process per trial
# Base-config keys that may change when a search is resumed (they do not change results).
RESUMABLE_CHANGES = ("wandb", "wandb_project", "tags", "name", "out", "group", "strategy")
DEFAULT_MAX_TRIALS = 10
DEFAULT_FACTOR = 3


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m tuning.search",
        description="Search hyperparameters of a fer_keras model with KerasTuner; every trial trains "
        "like fer_keras.train and is its own W&B run. Rerun the same command to resume.",
    )
    parser.add_argument("--model", nargs="+", metavar="NAME",
                        help="architecture; several names make the architecture a searched dimension "
                        "(default: the recipe's/config's model, else simple_cnn)")
    parser.add_argument("--tuner", choices=tuple(TUNERS), default="hyperband", help="search algorithm")
    parser.add_argument("--max-epochs", type=int, required=True, metavar="N",
                        help="epochs of the longest trial (every trial's for random and bayesian)")
    parser.add_argument("--factor", type=int, metavar="F", help=f"Hyperband reduction factor (default {DEFAULT_FACTOR})")
    parser.add_argument("--max-trials", type=int, metavar="N",
                        help=f"trials of a random or bayesian search (default {DEFAULT_MAX_TRIALS}); "
                        "may grow when resuming")
    parser.add_argument("--objective", choices=tuple(OBJECTIVES), default="val_accuracy",
                        help="validation metric to maximise (val_f1_score: macro F1)")
    parser.add_argument("--only", nargs="+", metavar="PARAM",
                        help="search only these hyperparameters (e.g. learning_rate, or model with "
                        "several --model); the others keep the base config (see --dry-run)")
    parser.add_argument("--recipe", help="base config: a bundled recipe (" + ", ".join(config_lib.list_recipes()) + ")")
    parser.add_argument("--config", metavar="FILE", help="base config: a JSON/YAML file of training config keys")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="base config: training config keys or builder hyperparameters, "
                        "e.g. --set schedule=cosine dropout=0.3")
    parser.add_argument("--data", help="FER2013 CSV (default: the embedded synthetic data)")
    parser.add_argument("--limit", type=int, metavar="N", help="use only N rows (stratified sample)")
    parser.add_argument("--precision", choices=config_lib.SPECS["precision"].choices)
    parser.add_argument("--strategy", choices=TRIAL_STRATEGIES, help="tf.distribute strategy inside each trial")
    parser.add_argument("--wandb", choices=config_lib.SPECS["wandb"].choices, help="W&B mode of the trials' runs")
    parser.add_argument("--wandb-project")
    parser.add_argument("--seed", type=int, help="seed of the search and of every trial")
    parser.add_argument("--out", default="searches", metavar="DIR", help="folder of searches (default: searches)")
    parser.add_argument("--name", required=True, metavar="SEARCH",
                        help="search name: folder DIR/SEARCH and W&B group; reuse it to resume")
    parser.add_argument("--dry-run", action="store_true", help="print the search space and exit")
    return parser


def base_config(args):
    """The validated base config: DEFAULTS < recipe < --config < --set < the flags."""
    overrides = {}
    for key, value in config_lib.parse_assignments(args.set).items():
        if key in config_lib.DEFAULTS:
            overrides[key] = value
        else:
            overrides.setdefault("model_args", {})[key] = value
    flags = {"data": args.data, "limit": args.limit, "precision": args.precision, "strategy": args.strategy,
             "wandb": args.wandb, "wandb_project": args.wandb_project, "seed": args.seed, "recipe": args.recipe,
             "model": args.model[0] if args.model else None}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return config_lib.resolve_config(overrides, args.config)


def search_state(args, space):
    """What identifies a search: resuming with anything else would mix two searches."""
    return {
        "search": args.name,
        "tuner": args.tuner,
        "objective": args.objective,
        "max_epochs": args.max_epochs,
        "factor": args.factor if args.tuner == "hyperband" else None,
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
    """'key: old -> new' for every differing leaf, except RESUMABLE_CHANGES of the base config."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        if prefix == "space.base." and key in RESUMABLE_CHANGES:
            continue
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def check_args(args):
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):
        raise FerError(f"--name {args.name!r}: use letters, digits, '-' and '_' (it names a folder and W&B runs)")
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


def run_search(args):
    """Run (or resume) the search; return the summary rows, best first (None on a worker)."""
    check_args(args)
    role = distributed.role()
    base = base_config(args)
    if base["strategy"] not in TRIAL_STRATEGIES:
        raise FerError("strategy 'multi_worker' cannot train single trials: KerasTuner gives each process "
                       "its own trials; spread trials over machines with KERASTUNER_* (see tuning/distributed.py)")
    space = SearchSpace(base, models=args.model or None, only=args.only)
    state = search_state(args, space)
    if args.dry_run:
        print(json.dumps({k: v for k, v in state.items() if k != "space"} | {"dims": state["space"]["dims"]}, indent=2))
        return None
    strategy = get_strategy(base["strategy"])  # before TensorFlow starts (it may split the CPU)
    search_dir = Path(args.out) / args.name
    check_state(search_dir, state)
    print(distributed.describe())
    hypermodel = FerHyperModel(space, args.max_epochs)
    tuner = make_tuner(
        args.tuner, hypermodel, directory=args.out, name=args.name, objective=args.objective,
        factor=args.factor, max_trials=args.max_trials or DEFAULT_MAX_TRIALS,
        strategy=None if base["strategy"] == "default" else strategy, seed=base["seed"],
    )
    tuner.search(verbose=keras_verbosity())
    if role == "worker":
        print(f"{distributed.describe()}: no trials left")
        return None
    rows = write_summary(search_dir, state)
    _report(search_dir, rows, args.objective)
    return rows


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
    sys.exit(main())
