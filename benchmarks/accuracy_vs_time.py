"""Time to accuracy: every measured recipe's PublicTest accuracy against its training minutes.

`python benchmarks/accuracy_vs_time.py add RUN --data ../shared/data/fer2013.csv.gz [--label TEXT]`
appends a finished run to benchmarks/results/recipes.csv (accuracy plain and with flip TTA, macro F1,
parameters, minutes); `python benchmarks/accuracy_vs_time.py plot` draws accuracy_vs_time.png from it,
with the field's reference figures as horizontal lines.
"""

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fer_keras.evaluation.evaluate import accuracy_with_tta  # noqa: E402
from fer_keras.core.io import atomic_path  # noqa: E402
from fer_keras.modelio.saving import load_keras_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TABLE = RESULTS / "recipes.csv"
COLUMNS = ["label", "recipe", "model", "params", "epochs", "minutes", "publictest", "publictest_tta", "macro_f1",
           "run"]
# Reference accuracies (PrivateTest, where the field reports them; ours run 0.8-1.8 points lower on PublicTest).
REFERENCES = {
    "mini-Xception (fer package), 65.8%": 0.658,
    "Kaggle 2013 winner, 71.16%": 0.7116,
    "best single network (Khaireddin & Chen 2021), 73.28%": 0.7328,
    "ensemble (Pramerdorfer & Kampel 2016), 75.2%": 0.752,
}


def read_table():
    if not TABLE.exists():
        return []
    with open(TABLE, newline="") as f:
        return list(csv.DictReader(f))


def add(run, data, label=None):
    """The table row of finished run folder `run` (its metrics.json, config.json and best model)."""
    run = Path(run)
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    row = {
        "label": label or cfg["recipe"] or run.name,
        "recipe": cfg["recipe"] or "",
        "model": cfg["model"],
        "params": metrics["params"],
        "epochs": metrics["epochs"],
        "minutes": round(metrics["train_time"] / 60, 1),
        "publictest": round(metrics["val"]["accuracy"], 4),
        "publictest_tta": round(accuracy_with_tta(load_keras_model(run), data), 4),
        "macro_f1": round(metrics["val"]["macro_f1"], 4),
        "run": run.name,
    }
    rows = [r for r in read_table() if r["run"] != row["run"]] + [row]
    with atomic_path(TABLE) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return row


def plot(path=RESULTS / "accuracy_vs_time.png"):
    """Draw the table: one numbered point per run (hollow: plain, filled: with flip TTA), keyed beside the
    axes so long labels never overlap, and the references as lines."""
    rows = read_table()
    fig, ax = plt.subplots(figsize=(12, 5.5))
    key = []
    for number, row in enumerate(rows, 1):
        minutes, plain, tta = float(row["minutes"]), float(row["publictest"]), float(row["publictest_tta"])
        ax.plot([minutes, minutes], [plain, tta], color="0.7", lw=1)
        ax.scatter(minutes, plain, facecolors="none", edgecolors="C0")
        ax.scatter(minutes, tta, color="C0")
        ax.annotate(str(number), (minutes, max(plain, tta)), textcoords="offset points", xytext=(3, 3), fontsize=8)
        key.append(f"{number}. {row['label']}: {plain:.1%} ({tta:.1%} TTA), {minutes:.0f} min")
    for (name, value), color in zip(REFERENCES.items(), ("C1", "C2", "C3", "C4")):
        ax.axhline(value, color=color, ls="--", lw=1)
        ax.text(0.99, value + 0.001, name, color=color, fontsize=7, ha="right", va="bottom",
                transform=ax.get_yaxis_transform())
    ax.axvline(120, color="0.5", ls=":", lw=1)
    ax.text(121, 0.61, "120 min budget", fontsize=7, color="0.4", rotation=90)
    ax.set(xlabel="training minutes on 2 CPU cores", ylabel="PublicTest accuracy (filled: flip TTA)",
           title="Time to accuracy", xlim=(0, max([130] + [float(r["minutes"]) * 1.1 for r in rows])),
           ylim=(0.60, 0.76))
    ax.grid(alpha=0.3)
    fig.text(0.60, 0.88, "\n".join(key), fontsize=7, va="top", wrap=True)
    fig.subplots_adjust(left=0.07, right=0.58, bottom=0.1, top=0.92)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    adding = commands.add_parser("add", help="add a finished run to recipes.csv")
    adding.add_argument("run")
    adding.add_argument("--data", required=True, help="the labelled FER2013 CSV (PublicTest for TTA)")
    adding.add_argument("--label", help="name in the table and plot (default: the recipe)")
    commands.add_parser("plot", help="draw accuracy_vs_time.png from recipes.csv")
    args = parser.parse_args()
    if args.command == "add":
        print(add(args.run, args.data, args.label))
    else:
        print(f"wrote {plot()}")


if __name__ == "__main__":
    main()
