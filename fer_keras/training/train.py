"""Train a registered architecture on FER2013 (or the synthetic default), evaluate it, track it.

`python -m fer_keras.train [--recipe NAME] [--config FILE] [--data PATH] [--model NAME]
[--set KEY=VALUE ...] [--epochs N] [--out DIR] ...`: every config key has a flag (`--help`).
Running the same command again with the same `--out` resumes an interrupted run. With
`--strategy multi_worker` every worker runs the same command (its `TF_CONFIG` differs). Exit status: 0,
2 for a user error (bad config, data, NaN loss), 1 when `--overfit-check` stays below 100%.
"""

import time
from pathlib import Path

import numpy as np
import yaml

from fer_keras.training import config as config_lib
from fer_keras.training import multi_worker
from fer_keras.training import runner
from fer_keras.core import runs
from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.training.distribute import get_strategy
from fer_keras.core.io import write_json
from fer_keras.models import default_hparams


def train(cfg, verbose=None):
    """Run `cfg` (resolved by `config.resolve_config`) as `python -m fer_keras.train` does: the
    overfit check's settings, the strategy and this process's part in it, then `run_training`.
    Returns metrics.json's content plus `run_dir`."""
    if cfg["folds"] and cfg["fold"] is None:
        return cross_validate(cfg, verbose)
    if cfg["overfit_check"]:
        cfg = overfit_config(cfg)
    strategy = get_strategy(cfg["strategy"])  # before any other TensorFlow work (device setup)
    chief, task = multi_worker.role(strategy)
    if cfg["strategy"] != "default":
        where = f"; this process is {task}{' (chief)' if chief else ''}" if task else ""
        print(f"strategy: {cfg['strategy']} ({type(strategy).__name__}) with "
              f"{strategy.num_replicas_in_sync} replicas{where}")
    run_dir = Path(cfg["out"] or default_out(cfg))
    if not chief:  # the chief owns the run folder, W&B and the export; other workers keep their own
        run_dir = run_dir / task
        cfg = {**cfg, "wandb": "disabled", "export": False}
    cfg = {**cfg, "out": str(run_dir)}
    callbacks = [multi_worker.SameResumeEpoch()] if cfg["strategy"] == "multi_worker" else []
    metrics = runner.run_training(cfg, run_dir, strategy=strategy, callbacks=callbacks, verbose=verbose)
    return {**metrics, "run_dir": str(run_dir)}


def default_out(cfg):
    """runs/<model>-<timestamp>."""
    return f"runs/{cfg['model']}-{time.strftime('%Y%m%d-%H%M%S')}"


def cross_validate(cfg, verbose=None):
    """Every fold of `cfg["folds"]` as its own run in <out>/fold-<i> (one W&B group), then
    <out>/cross_validation.json with mean and std across folds; returns that plus `run_dir`."""
    out = Path(cfg["out"] or default_out(cfg))
    folds = [train({**cfg, "fold": i, "out": str(out / f"fold-{i}"), "group": cfg["group"] or out.name}, verbose)
             for i in range(cfg["folds"])]
    summary = {"folds": cfg["folds"]}
    for split in ("val", "test"):
        if all(split in f for f in folds):
            summary[split] = {metric: _spread([f[split][metric] for f in folds]) for metric in ("accuracy", "macro_f1")}
    write_json(out / runs.CROSS_VALIDATION_FILE, summary)
    for split in ("val", "test"):
        if split in summary:
            m = summary[split]
            print(f"{cfg['folds']}-fold {split}: accuracy {m['accuracy']['mean']:.4f} +- {m['accuracy']['std']:.4f}, "
                  f"macro F1 {m['macro_f1']['mean']:.4f} +- {m['macro_f1']['std']:.4f}")
    return {**summary, "run_dir": str(out)}


def _spread(values):
    """Mean, sample standard deviation and the values themselves."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "values": values}


def overfit_config(cfg):
    """`cfg` for the overfitting sanity check: no augmentation and no regularisation of any kind
    (every builder hyperparameter named *dropout or l2 set to 0)."""
    off = {k: 0.0 for k in default_hparams(cfg["model"]) if k.endswith("dropout") or k == "l2"}
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


def build_parser():
    """argparse parser with one flag per config option (`--learning-rate`), `--set` and `--config`."""
    parser = ArgumentParser(
        prog="python -m fer_keras.train",
        description="Train, evaluate and track a FER2013 model. Settings resolve as defaults < --recipe "
        "< --config < --set < flags; values like 1e-3, true, null, [a, b] are parsed.",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit")
    return config_lib.add_option_flags(parser)


@user_errors(interrupted="interrupted: run the same command again to resume from the last finished epoch")
def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = config_lib.resolve_config(*config_lib.options_from_args(args))
    if args.print_config:
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return 0
    metrics = train(cfg)
    check = metrics.get("overfit_check")
    return 1 if check and not check["reached_100"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
