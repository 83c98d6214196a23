"""Compare finished runs: one table (Markdown and CSV), overlaid validation curves, per-class recall.

`python -m fer_keras.evaluation.compare RUN_OR_FOLDER ... --out DIR` takes run folders, or folders holding them
at any depth (a study, a search), and writes DIR/comparison.md, comparison.csv, curves.png and
per_class.png. Columns: the run, model, parameters, MACs, epochs, best epoch, train/val/test
accuracy and macro F1, train-val gap, minutes, and every setting that differs between the runs (runs
of a search or study also get their `setting`, the values it gave them; `tuning.claims` judges
published studies by it).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fer_keras.core import runs as run_folder
from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.constants import CLASS_NAMES
from fer_keras.core.io import atomic_path, check_output, write_text
from fer_keras.core.tables import markdown_table

# Settings that differ between any two runs without being an experiment's variable.
NOT_VARIABLES = (*run_folder.RESUMABLE, "recipe")
SCORES = ("val_accuracy", "val_macro_f1", "test_accuracy", "gap")


def _label(run, runs):
    """The shortest unambiguous name of `run`: its path below the runs' common folder."""
    if len(runs) == 1:
        return run.name
    common = Path(*[parts[0] for parts in zip(*(r.resolve().parts for r in runs)) if len(set(parts)) == 1])
    return str(run.resolve().relative_to(common)) if common != run.resolve() else run.name


def _flat(cfg):
    """The config with builder hyperparameters as top-level `model_args.KEY` columns."""
    flat = {k: v for k, v in cfg.items() if k != "model_args"}
    flat.update({f"model_args.{k}": v for k, v in cfg["model_args"].items()})
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flat.items()}


def _settings(run):
    """A run's flat config, with the values a search gave it."""
    return {**_flat(run_folder.read_config(run)), **run_folder.searched_values(run)}


def setting_label(values):
    """A run's setting within its search or study series: the values it was given except the seed,
    joined by "/" ("-" when none)."""
    return "/".join(str(v) for k, v in values.items() if k != "seed") or "-"


def _plot_label(run, label):
    """A run's name in the plots: its label, then its setting (e.g. "lr/trial_0001 0.001")."""
    setting = setting_label(run_folder.searched_values(run))
    return label if setting == "-" else f"{label} {setting}"


def comparison_table(runs):
    """One row per run: headline figures, then the settings that vary."""
    records = [(run_folder.read_metrics(r), _settings(r)) for r in runs]
    keys = sorted({k for _, cfg in records for k in cfg} - set(NOT_VARIABLES))
    varying = [k for k in keys if len({str(cfg.get(k)) for _, cfg in records}) > 1]
    rows = []
    for run, (metrics, cfg) in zip(runs, records):
        row = {"run": _label(run, runs), "setting": setting_label(run_folder.searched_values(run)),
               "model": metrics.get("model"), "params": metrics.get("params"),
               "macs": metrics.get("macs"), "epochs": metrics.get("epochs"), "best_epoch": metrics.get("best_epoch")}
        for split in ("train", "val", "test"):
            section = metrics.get(split, {})
            row[f"{split}_accuracy"] = section.get("accuracy")
            row[f"{split}_macro_f1"] = section.get("macro_f1")
        row["gap"] = metrics.get("train_val_gap")
        row["minutes"] = metrics["train_time"] / 60 if "train_time" in metrics else None
        row.update({k: cfg.get(k) for k in varying if k not in row})  # model, epochs: as run
        rows.append(row)
    table = pd.DataFrame(rows).dropna(axis=1, how="all")
    return table if (table["setting"] != "-").any() else table.drop(columns="setting")


def over_seeds(table):
    """Mean +- std of the scores over runs that differ only in `seed` (None when no seed varies)."""
    if "seed" not in table:
        return None
    keys = [c for c in table.columns if c not in ("run", "seed", "params", "macs", "epochs", "best_epoch",
                                                   "minutes") and not c.startswith(("train_", "val_", "test_"))
            and c != "gap"]
    scores = [c for c in SCORES if c in table]
    grouped = table.fillna({k: "" for k in keys}).groupby(keys, sort=False) if keys else [((), table)]
    rows = []
    for key, group in grouped:
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row["seeds"] = len(group)
        for score in scores:
            row[f"{score}_mean"] = group[score].mean()
            row[f"{score}_std"] = group[score].std(ddof=1) if len(group) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def plot_curves(runs, labels, path):
    """Validation accuracy per epoch of every run (solid), training accuracy dashed in the same colour."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for i, (run, label) in enumerate(zip(runs, labels)):
        history = pd.DataFrame(run_folder.read_history(run)[1]).apply(pd.to_numeric)
        color = f"C{i % 10}"
        ax.plot(history["epoch"] + 1, history["val_accuracy"], color=color, label=label)
        ax.plot(history["epoch"] + 1, history["accuracy"], color=color, ls="--", alpha=0.6)
    ax.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy (training dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_per_class(runs, labels, path, split="val"):
    """Per-class recall on `split` as grouped bars, one bar per run in every class."""
    fig = Figure(figsize=(max(8, len(runs) * 1.6), 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(runs)
    for i, (run, label) in enumerate(zip(runs, labels)):
        per_class = run_folder.read_metrics(run)[split]["per_class"]
        recall = [per_class[c]["recall"] for c in CLASS_NAMES]
        ax.bar(np.arange(len(CLASS_NAMES)) + (i - (len(runs) - 1) / 2) * width, recall, width, label=label)
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set(ylabel=f"recall ({split})", ylim=(0, 1), title=f"Per-class recall on {split}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def write_tables(table, out, note=""):
    """Write `table` as out/comparison.csv and comparison.md (`note` below it), and its mean +- std
    over seeds as comparison_over_seeds.csv where a seed varies."""
    with atomic_path(out / "comparison.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    text = markdown_table(table.to_dict("records"), list(table.columns)) + (f"\n{note}\n" if note else "")
    spread = over_seeds(table)
    if spread is not None:
        with atomic_path(out / "comparison_over_seeds.csv") as tmp:
            spread.to_csv(tmp, index=False, float_format="%.4f")
        text += "\nMean and standard deviation over seeds:\n\n" + markdown_table(
            spread.to_dict("records"), list(spread.columns))
    write_text(out / "comparison.md", text)


def compare(paths, out):
    """Write the comparison of the runs in `paths` into folder `out`; return the table."""
    runs = run_folder.find_runs(paths)
    table = comparison_table(runs)
    out = Path(out)
    write_tables(table, out)
    labels = [_plot_label(run, label) for run, label in zip(runs, table["run"])]
    plot_curves(runs, labels, out / "curves.png")
    if all("val" in run_folder.read_metrics(r) for r in runs):
        plot_per_class(runs, labels, out / "per_class.png")
    return table


@user_errors
def main(argv=None):
    parser = ArgumentParser(prog="python -m fer_keras.evaluation.compare", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_FOLDER", help="run folders, or folders holding runs")
    parser.add_argument("--out", required=True, help="folder for comparison.md/.csv, curves.png, per_class.png")
    args = parser.parse_args(argv)
    check_output(args.out, folder=True)
    table = compare(args.paths, args.out)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"{len(table)} runs compared in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
