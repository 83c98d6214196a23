"""A study's measured results beside the original project's reported figures, and a verdict per claim
(claims.md, claims.csv, settings.csv).

A series of a study file may hold `reported: {setting: figure}`, where a setting is a variant name or
a grid value (joined by "/" when a series varies several) and a figure is a percentage or the
project's words ("diverged"). Each setting's runs give mean +- std over their seeds (settings.csv).

The file's `claims` list states what the project concluded, each as one test on the runs, named
`series/setting`, or on the networks' sizes:

    higher / lower / not_higher: A, than: B   A's metric above / below / not above B's, beyond noise
    at_most / at_least: X, of: A             A's mean at most / at least X
    near: X, of: A                           A's mean within noise of X (a reported level)
    params: MODEL, stated: N [, per: MODEL2]  trainable parameters (or their ratio) within 5% of N

`metric` is val (validation accuracy, the projects' figure; default), train, gap (train - validation,
points), f1 (validation macro F1 x 100) or minutes (training time; a difference is also given as
a ratio, the way the projects state time). Noise is twice the standard error of the difference of
means with two or more seeds a side, and SINGLE_RUN_NOISE with one. A difference within noise is
decided only with at least MIN_SEEDS seeds a side: `not_higher` then holds, and `higher` or `lower`
fails where the project's own margin (the `reported` figures of both sides) lies beyond noise of
the measured one. A run that never left the majority class decides nothing but a claim that it
fails (`at_most`). A decision at a budget short of the full one is marked provisional where a side's
runs all had their best epoch last (still improving when the budget ran out).
"""

import math
import statistics
from pathlib import Path

import pandas as pd

from fer_keras.core import runs
from fer_keras.core.io import atomic_path, write_text
from fer_keras.core.tables import markdown_table
from fer_keras.errors import FerError
from fer_keras.evaluation.compare import setting_label

SCORES = ("train_accuracy", "val_accuracy", "test_accuracy")
COLUMNS = ("series", "setting", "reported", "val_accuracy", "test_accuracy", "train_accuracy",
           "gap", "split", "runs", "minutes")
CLAIM_COLUMNS = ("claim", "verdict", "measured", "why", "seeds")
VERDICTS = ("supported", "contradicted", "undecided")
KINDS = ("higher", "lower", "not_higher", "at_most", "at_least", "near", "params")
METRICS = ("val", "train", "gap", "f1", "minutes")
# Two default-recipe runs differing only in seed scored 1.1 points apart (docs/results.md): one run a
# side cannot separate differences under about twice that.
SINGLE_RUN_NOISE = 2.0
MIN_SEEDS = 3
MAJORITY = 27.0  # accuracy (%) at or under which a run still predicts mostly one class (Happy: 25%)
PARAMS_TOLERANCE = 0.05


def setting_runs(series_dir):
    """{setting: [(metrics, config)]} of the finished runs in one series folder (none yet: {}); a
    published series, without its run folders, gives them from its comparison table."""
    settings = {}
    if not any(Path(series_dir).glob(f"*/{runs.METRICS_FILE}")):
        return published_runs(series_dir)
    for run in runs.find_runs([series_dir]):
        label = setting_label(runs.searched_values(run))
        settings.setdefault(label, []).append((runs.read_metrics(run), runs.read_config(run)))
    return settings


def published_runs(series_dir):
    """`setting_runs` read back from a series' comparison/comparison.csv (`tuning.study publish`): the
    scores, minutes and epochs of each run; the split is not in the table."""
    table = Path(series_dir) / "comparison" / "comparison.csv"
    if not table.is_file():
        return {}
    frame = pd.read_csv(table, dtype={"setting": str})
    if "setting" not in frame:
        raise FerError(f"{table} has no setting column: compare the series' runs again to judge its claims")
    settings = {}
    for row in frame.to_dict("records"):
        metrics = {split: {"accuracy": row[f"{split}_accuracy"], "macro_f1": row.get(f"{split}_macro_f1")}
                   for split in ("train", "val", "test") if pd.notna(row.get(f"{split}_accuracy"))}
        metrics["train_val_gap"] = row.get("gap") if pd.notna(row.get("gap")) else None
        if pd.notna(row.get("minutes")):
            metrics["train_time"] = row["minutes"] * 60
        metrics.update({key: int(row[key]) for key in ("epochs", "best_epoch") if pd.notna(row.get(key))})
        settings.setdefault(row["setting"], []).append((metrics, {"split": ""}))
    return settings


def series_claims(series_dir, reported):
    """One row per setting of the series in `series_dir`: its reported figure and measured scores."""
    settings = setting_runs(series_dir)
    reported = {str(k): v for k, v in (reported or {}).items()}
    rows = []
    for setting in dict.fromkeys([*reported, *sorted(settings)]):
        measured = [metrics for metrics, _ in settings.get(setting, [])]
        splits = {config["split"] for _, config in settings.get(setting, [])} - {""}
        row = {"series": Path(series_dir).name, "setting": setting, "reported": _figure(reported.get(setting)),
               "split": ", ".join(sorted(splits)), "runs": len(measured)}
        for column, metric in [*((score, score.split("_")[0]) for score in SCORES), ("gap", "gap")]:
            row[column] = _spread([v for v in (metric_values(m, metric) for m in measured) if v is not None])
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


def metric_values(metrics, metric):
    """One run's value of `metric` (accuracies and gap in points, minutes of training)."""
    if metric == "minutes":
        return metrics.get("train_time", 0) / 60
    if metric == "f1":
        return metrics["val"]["macro_f1"] * 100 if "val" in metrics else None
    if metric == "gap":
        return metrics["train_val_gap"] * 100 if metrics.get("train_val_gap") is not None else None
    return metrics[metric]["accuracy"] * 100 if metric in metrics else None


def study_values(study_dir, names, metric):
    """{"series/setting": [values per seed]} for `names`, {"series/setting": stuck} (never left the
    majority class: train and validation accuracy both at most MAJORITY) and {"series/setting": rising}
    (every run's best epoch was its last)."""
    values, stuck, rising, cache = {}, {}, {}, {}
    for name in names:
        series, _, setting = name.partition("/")
        if series not in cache:
            folder = Path(study_dir) / series
            cache[series] = setting_runs(folder) if folder.is_dir() else {}
        found = cache[series].get(setting, [])
        values[name] = [v for v in (metric_values(m, metric) for m, _ in found) if v is not None]
        stuck[name] = bool(found) and all(
            (metric_values(m, "train") or 100) <= MAJORITY and (metric_values(m, "val") or 100) <= MAJORITY
            for m, _ in found)
        rising[name] = bool(found) and all(
            m.get("best_epoch") is not None and m.get("best_epoch") == m.get("epochs") for m, _ in found)
    return values, stuck, rising


def _noise(*samples):
    """Twice the standard error of a mean (one sample) or of a difference of means (two)."""
    if any(len(s) < 2 for s in samples):
        return SINGLE_RUN_NOISE
    return max(2 * math.sqrt(sum(statistics.variance(s) / len(s) for s in samples)), 0.5)


def judge(claim, values, stuck, rising=None):
    """(verdict, measured, why) of one claim given `values` {"series/setting": [per seed]}, `stuck` and
    `rising`."""
    verdict, measured, why = _decide(claim, values, stuck)
    late = [name for name, still in (rising or {}).items() if still]
    if verdict != "undecided" and late and _short_budget(claim) and claim.get("metric") != "minutes":
        why += f"; provisional: {', '.join(late)} still improving at the last epoch"
    return verdict, measured, why


def _short_budget(claim):
    """Whether the claim is judged on runs shorter than the project's (a budget other than full)."""
    return claim.get("budget") not in (None, "full")


def _decide(claim, values, stuck):
    """`judge` without the provisional mark."""
    kind = next(k for k in KINDS if k in claim)
    unit = "min" if claim.get("metric") == "minutes" else "points"
    if kind in ("higher", "lower", "not_higher"):
        a, b = claim[kind], claim["than"]
        names = (a, b)
    else:
        a, b = claim["of"], None
        names = (a,)
    missing = [n for n in names if not values.get(n)]
    if missing:
        return "undecided", "", f"not run: {', '.join(missing)}"
    measured = "; ".join(f"{n} {_spread(values[n])}" for n in names)
    seeds = min(len(values[n]) for n in names)
    if kind != "at_most" and claim.get("metric", "val") != "minutes" and any(stuck[n] for n in names):
        return "undecided", measured, f"{', '.join(n for n in names if stuck[n])} never left the majority class"
    if b is not None:
        mean_a, mean_b = statistics.fmean(values[a]), statistics.fmean(values[b])
        diff = mean_a - mean_b
        noise = _noise(values[a], values[b])
        beyond = abs(diff) > noise
        times = f" ({mean_a / mean_b:.2f}x)" if unit == "min" and mean_b else ""
        said = f"difference {diff:+.2f} {unit}{times}, noise ±{noise:.2f} ({seeds} seed{'s' * (seeds > 1)})"
        if kind == "lower":
            diff = -diff
        if beyond:
            if kind == "not_higher":
                return ("contradicted" if diff > 0 else "supported"), measured, said
            return ("supported" if diff > 0 else "contradicted"), measured, said
        if seeds < MIN_SEEDS:
            return "undecided", measured, f"{said}: within noise, needs {MIN_SEEDS} seeds"
        if kind == "not_higher":
            return "supported", measured, f"{said}: within noise"
        stated = claim.get("reported_difference")
        if stated is not None and stated - diff > noise:
            return "contradicted", measured, (f"{said}: within noise, {stated - diff:.2f} short of the "
                                              f"project's {stated:+.2f}")
        return "undecided", measured, f"{said}: within noise"
    mean = statistics.fmean(values[a])
    noise = _noise(values[a])
    target = claim[kind]
    said = f"mean {mean:.2f} against {target} (noise ±{noise:.2f}, {seeds} seed{'s' * (seeds > 1)})"
    if kind == "at_most":
        verdict = "supported" if mean <= target else "contradicted" if mean > target + noise else "undecided"
    elif kind == "at_least":
        verdict = "supported" if mean >= target else "contradicted" if mean < target - noise else "undecided"
    else:  # near: a level the project reached after training longer than a short budget may
        verdict = ("supported" if abs(mean - target) <= noise
                   else "contradicted" if mean > target or not _short_budget(claim) else "undecided")
        if verdict == "undecided":
            said += f": below it at the {claim['budget']} budget; longer training may reach it"
    return verdict, measured, said


def judge_params(claim):
    """(verdict, measured, why) of a parameter-count claim, from the networks as built."""
    from fer_keras.models import build_model

    def count(name):
        return sum(math.prod(w.shape) for w in build_model(name).trainable_weights)

    value = count(claim["params"])
    measured = f"{claim['params']} {value:,}"
    if claim.get("per"):
        other = count(claim["per"])
        measured += f"; {claim['per']} {other:,}"
        value = value / other
    error = value / claim["stated"] - 1
    verdict = "supported" if abs(error) <= PARAMS_TOLERANCE else "contradicted"
    said = f"ratio {value:.3f}" if claim.get("per") else f"count {value:,}"
    return verdict, measured, f"{said} is {error:+.0%} off the stated {claim['stated']:,}"


def reported_difference(study, claim):
    """The project's own margin for a `higher`/`lower` claim on validation accuracy, in the claim's
    direction, from both sides' `reported` figures; None where either is not a number."""
    kind = next((k for k in ("higher", "lower") if k in claim), None)
    if kind is None or claim.get("metric", "val") != "val":
        return None
    figures = []
    for name in (claim[kind], claim["than"]):
        series, _, setting = name.partition("/")
        reported = (study["series"].get(series) or {}).get("reported") or {}
        figures.append({str(k): v for k, v in reported.items()}.get(setting))
    if not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in figures):
        return None
    return (figures[0] - figures[1]) * (1 if kind == "higher" else -1)


def judge_claims(study, study_dir, budget=None):
    """One row per claim of `study`: its text, verdict, the measured figures and why."""
    rows = []
    for claim in study.get("claims") or []:
        if "params" in claim:
            verdict, measured, why = judge_params(claim)
            seeds = ""
        else:
            names = [claim[k] for k in ("higher", "lower", "not_higher", "than", "of") if k in claim]
            values, stuck, rising = study_values(study_dir, names, claim.get("metric", "val"))
            stated = reported_difference(study, claim)
            verdict, measured, why = judge({**claim, "budget": budget, "reported_difference": stated}, values,
                                           stuck, rising)
            seeds = min(len(values[n]) for n in names)
        rows.append({"claim": claim["claim"], "verdict": verdict, "measured": measured, "why": why, "seeds": seeds})
    return rows


def write_claims(study, study_dir, budget=None):
    """Write study_dir/claims.md, claims.csv (a verdict per claim) and settings.csv (the series that
    have run, setting by setting); return the claim rows."""
    study_dir = Path(study_dir)
    settings = [row for name, spec in study["series"].items() if (study_dir / name).is_dir()
                for row in series_claims(study_dir / name, spec.get("reported"))]
    claims = judge_claims(study, study_dir, budget)
    for name, table, columns in (("settings.csv", settings, COLUMNS), ("claims.csv", claims, CLAIM_COLUMNS)):
        with atomic_path(study_dir / name) as tmp:
            pd.DataFrame(table, columns=columns).to_csv(tmp, index=False)
    counts = {v: sum(r["verdict"] == v for r in claims) for v in VERDICTS}
    assumed = "".join(f"- {key}: {why}\n" for key, why in (study.get("assumed") or {}).items())
    text = (f"# {study['project']}\n\nReported: {study.get('reported_as', 'the project figures')} "
            f"(seed file {study['seed_file']}). Budget: {budget or 'as run'}.\n\n"
            f"## Claims\n\n{len(claims)} claims: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ". "
            f"Noise: twice the standard error of the difference (±{SINGLE_RUN_NOISE} points with one run a "
            f"side); a difference within noise needs {MIN_SEEDS} seeds.\n\n"
            + markdown_table(claims, list(CLAIM_COLUMNS))
            + (f"\n## Assumed where the project is silent\n\n{assumed}" if assumed else "")
            + "\n## Settings\n\nMeasured: accuracy in %, mean ± std over seeds, gap = train - validation accuracy "
            "in points, minutes of training summed over the runs. Split `usage`: validation is PublicTest (no "
            "test split); `stratified`: validation is a share of Training and test is PublicTest.\n\n"
            + markdown_table(settings, list(COLUMNS)))
    write_text(study_dir / "claims.md", text)
    return claims
