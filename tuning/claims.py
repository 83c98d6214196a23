"""A study's measured results beside the original project's reported figures (claims.md, claims.csv).

A series of a study file may hold `reported: {setting: figure}`, where a setting is a variant name or
a grid value (joined by "/" when a series varies several) and a figure is a percentage or the
project's words ("diverged"). Each setting's runs give mean +- std over their seeds.
"""

import statistics
from pathlib import Path

import pandas as pd

from fer_keras.core import runs
from fer_keras.evaluation.compare import setting_label
from fer_keras.core.io import atomic_path, write_text
from fer_keras.core.tables import markdown_table

SCORES = ("train_accuracy", "val_accuracy", "test_accuracy")
COLUMNS = ("series", "setting", "reported", "val_accuracy", "test_accuracy", "train_accuracy",
           "gap", "split", "runs", "minutes")


def series_claims(series_dir, reported):
    """One row per setting of the series in `series_dir`: its reported figure and measured scores."""
    settings, splits = {}, {}
    for run in runs.find_runs([series_dir]):
        label = setting_label(runs.searched_values(run))
        settings.setdefault(label, []).append(runs.read_metrics(run))
        splits[label] = runs.read_config(run)["split"]
    reported = {str(k): v for k, v in (reported or {}).items()}
    rows = []
    for setting in dict.fromkeys([*reported, *sorted(settings)]):
        measured = settings.get(setting, [])
        row = {"series": Path(series_dir).name, "setting": setting, "reported": _figure(reported.get(setting)),
               "split": splits.get(setting, ""), "runs": len(measured)}
        for score in SCORES:
            split = score.split("_")[0]
            row[score] = _spread([m[split]["accuracy"] * 100 for m in measured if split in m])
        row["gap"] = _spread([m["train_val_gap"] * 100 for m in measured if m.get("train_val_gap") is not None])
        row["minutes"] = round(sum(m.get("train_time", 0) for m in measured) / 60, 1) if measured else ""
        rows.append(row)
    return rows


def _figure(value):
    """A reported figure as text: numbers as percentages, words as written, blank when none."""
    if value is None:
        return ""
    return f"{value:.2f}%" if isinstance(value, (int, float)) else str(value)


def _spread(values):
    """`mean` or `mean +- std` (two or more seeds) in points, blank for none."""
    if not values:
        return ""
    mean = statistics.fmean(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {statistics.stdev(values):.2f}"


def write_claims(study, study_dir):
    """Write study_dir/claims.md and claims.csv for the series that have run; return the rows."""
    study_dir = Path(study_dir)
    rows = [row for name, spec in study["series"].items() if (study_dir / name).is_dir()
            for row in series_claims(study_dir / name, spec.get("reported"))]
    table = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_path(study_dir / "claims.csv") as tmp:
        table.to_csv(tmp, index=False)
    head = (f"# {study['project']}\n\nReported: {study.get('reported_as', 'the project figures')} "
            f"(seed file {study['seed_file']}). Measured: accuracy in %, mean ± std over seeds, "
            "gap = train - validation accuracy in points, minutes of training summed over the runs. "
            "Split `usage`: validation is PublicTest (no test split); `stratified`: validation is a share "
            "of Training and test is PublicTest.\n\n")
    write_text(study_dir / "claims.md", head + markdown_table(rows, list(COLUMNS)))
    return rows
