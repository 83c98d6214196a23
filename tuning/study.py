"""Studies: an original project's experiment series, each a KerasTuner grid over its variants, in one command.

`python -m tuning.study run FILE [--data PATH] [--budget quick|middle|full] [--repeats N] [--out DIR]` runs
every series of a study file (YAML) as a grid search in DIR/STUDY/SERIES (resumable and distributed
like `tuning.search`), then compares each series' runs and all of them (`fer_keras.evaluation.compare`), and
puts the project's reported figures beside the measured ones with a verdict per claim (DIR/STUDY/claims.md,
claims.csv and settings.csv, `tuning.claims`).
A setting that several series share trains once; the later series reuse its run (`tuning.tuner.finished_twin`).
`--epochs N` and `--limit N` shrink the budget (a smoke test of a study: with no --data, on the
synthetic set).
`python -m tuning.study list` shows the shipped studies and their commands; `python -m tuning.study
publish OUT/STUDY --out DIR` copies a study's comparisons without its run folders into DIR/STUDY, keeps
the series (and a series' settings) published there before and not run again, and judges the claims
over all of them; `python -m tuning.study claims DIR --budget B` judges them again in place.

A study file holds `project` and `seed_file` (which original project it reproduces), `base` (config
keys every run shares), `budgets` (`quick`, `middle` and `full`: epochs and data limit), `assumed` (what
the study sets where the project is silent, and why), `claims` (the project's conclusions as tests,
`tuning.claims`) and `series`, each
either `variants` (named config layers, e.g. a network with its own recipe) or a `grid` of exact
values, and optionally `reported` (setting: the project's figure). A variant or grid value resolves
over `base` like flags over a config file.
"""

import itertools
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import yaml

from fer_keras.training import config as config_lib
from fer_keras.training import tracking
from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.evaluation.compare import compare, setting_label, write_tables
from fer_keras.errors import FerError
from fer_keras.core.io import atomic_path
from tuning import distributed
from tuning.claims import write_claims
from tuning.search import search_space, search_state
from tuning.spaces import VariantSpace, names_variants

STUDIES_DIR = Path(__file__).resolve().parent / "studies"
BUDGETS = ("quick", "middle", "full")
FILE_KEYS = {"project", "seed_file", "description", "base", "budgets", "series", "reported_as", "assumed", "claims"}
SERIES_KEYS = {"variants", "grid", "reported"}
PUBLISHED = {".md", ".csv", ".png"}


def list_studies():
    """Paths of the shipped study files."""
    return sorted(STUDIES_DIR.glob("*.yaml"))


def load_study(path):
    """A study file, checked: known keys, both budgets, every series a `variants` mapping or a `grid`."""
    path = Path(path)
    if not path.is_file() and (STUDIES_DIR / f"{path}.yaml").is_file():
        path = STUDIES_DIR / f"{path}.yaml"
    try:
        study = yaml.safe_load(config_lib.read_config_text(path, "study file"))
    except yaml.YAMLError as exc:
        raise FerError(f"study file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(study, dict):
        raise FerError(f"study file {path} must hold a mapping")
    unknown = sorted(set(study) - FILE_KEYS)
    if unknown:
        raise FerError(f"study file {path}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(FILE_KEYS))})")
    missing = [b for b in BUDGETS if b not in (study.get("budgets") or {})]
    if missing or not study.get("series"):
        raise FerError(f"study file {path} needs budgets {', '.join(BUDGETS)}, and at least one series")
    for name, series in study["series"].items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)) or not isinstance(series, dict) or \
                set(series) - SERIES_KEYS or not set(series) & {"variants", "grid"}:
            raise FerError(f"study file {path}: series {name!r} must be a name of letters, digits, '-' and '_' "
                           "holding `variants` (name: settings) and/or `grid` (key: [values]), and optionally "
                           "`reported` (setting: the project's figure)")
        unknown = sorted(set(map(str, series.get("reported") or {})) - set(series_settings(series)))
        if unknown:
            raise FerError(f"study file {path}: series {name} reports settings it does not run: "
                           f"{', '.join(unknown)} (it runs {', '.join(series_settings(series))})")
    return {**study, "name": path.stem, "path": str(path)}


def series_settings(series):
    """The settings of a series as `fer_keras.evaluation.compare.setting_label` names its runs: variant (where
    `tuning.spaces.names_variants`) and grid values, joined by "/", as `tuning.spaces.VariantSpace` sets its dims."""
    variants = list(series.get("variants") or {})
    dims = [variants] if names_variants(variants, series.get("grid")) else []
    dims += [values for values in (series.get("grid") or {}).values()]
    return [setting_label(dict(enumerate(combo))) for combo in itertools.product(*dims)]


def series_space(study, series, budget, repeats, overrides):
    """The `VariantSpace` of one series at `budget`, `repeats` seeds per variant and setting."""
    spec = study["series"][series]
    limits = {k: v for k, v in study["budgets"][budget].items() if k != "epochs"}
    layer = {**(study.get("base") or {}), **overrides}
    return VariantSpace(layer, spec.get("variants"), fixed=limits, grid=spec.get("grid"), repeats=repeats)


def run_study(study, *, out, budget="quick", repeats=1, overrides=None, only=None):
    """Run (or resume) every series (or those in `only`) of `study`; compare each and all. Returns the
    folder of the study's results, or None on a distributed worker."""
    out = Path(out) / study["name"]
    epochs = study["budgets"][budget]["epochs"]
    names = only or list(study["series"])
    unknown = sorted(set(names) - set(study["series"]))
    if unknown:
        raise FerError(f"study {study['name']} has no series {', '.join(unknown)} (it has {', '.join(study['series'])})")
    settings = {**(study.get("base") or {}), **(overrides or {})}
    wandb_target = {"study": study["name"], "mode": settings.get("wandb", "auto"),
                    "project": settings.get("wandb_project")}
    for index, series in enumerate(names):
        space = series_space(study, series, budget, repeats, overrides or {})
        state = {"study": study["name"], "budget": budget, "repeats": repeats,
                 **search_state(series, space, tuner="grid", max_epochs=epochs)}
        runs = math.prod(len(dim.args["values"]) for dim in space.dims.values())
        print(f"study {study['name']}, series {series}: {runs} runs of {epochs} epochs ({budget} budget)")
        with distributed.search_port(index):  # series i on the chief's port + i
            rows = search_space(space, state, out, series, tuner="grid", max_epochs=epochs,
                                wandb_group=f"{study['name']}/{series}")
        if rows is None:
            continue  # a worker: the chief compares
        compare([out / series], out / series / "comparison")
        tracking.log_comparison(out / series / "comparison", series=series, **wandb_target)
    if distributed.role() != "worker":  # the chief (or a single process) compares, once
        compare([out / s for s in study["series"] if (out / s).is_dir()], out / "comparison")
        tracking.log_comparison(out / "comparison", **wandb_target)
        judge(study, out, budget)
        print(f"study {study['name']}: comparisons in {out}/*/comparison and {out / 'comparison'}")
        return out
    return None


def publish(study_dir, out, study=None):
    """Copy a study's results without its run folders (claims, each series' comparison tables and plots)
    into out/STUDY, the shareable part (benchmarks/results/studies/BUDGET holds the measured ones).
    Only the study file's series are published (`study`: the file, by default the shipped one named
    like the folder), not other folders beside them. Series published before and not run again stay,
    and so do a series' settings not run again; the claims and settings tables are judged again over
    all of them."""
    study_dir = Path(study_dir)
    if not (study_dir / "claims.csv").exists():
        raise FerError(f"{study_dir} holds no finished study (no claims.csv): run the study first")
    spec = load_study(study or study_dir.name)
    target = Path(out) / study_dir.name
    budgets = {json.loads(path.read_text()).get("budget") for path in study_dir.glob("*/space.json")}
    if len(budgets) != 1:
        raise FerError(f"{study_dir}: its series ran at budgets {', '.join(map(str, sorted(budgets, key=str)))}; "
                       "publish one budget at a time")
    shutil.rmtree(target / "comparison", ignore_errors=True)  # all runs of one day: stale beside merged series
    for folder in (study_dir / name / "comparison" for name in spec["series"]):
        if not folder.is_dir():
            continue
        published = target / folder.relative_to(study_dir)
        kept = _settings_not_rerun(published / "comparison.csv", folder / "comparison.csv")
        files = {path.name: path for path in folder.glob("*.*") if path.suffix in PUBLISHED}
        for name, path in files.items():
            with atomic_path(published / name) as tmp:
                shutil.copyfile(path, tmp)
        for old in published.glob("*.*"):  # a series published again replaces its table but for `kept`
            if old.name not in files:
                old.unlink()
        if len(kept):
            table = pd.concat([pd.read_csv(published / "comparison.csv", dtype={"setting": str}), kept])
            settings = ", ".join(dict.fromkeys(kept["setting"]))
            write_tables(table, published, note=f"Kept from the series published before (not run again, so "
                                                f"not in this run's plots): {settings}.")
    judge(spec, target, budgets.pop())
    print(f"study {study_dir.name}: results in {target}")
    return target


def _settings_not_rerun(published, table):
    """The rows of the `published` comparison table whose settings the new `table` does not hold: a
    series run again for some of its settings keeps the others' published runs."""
    if not published.is_file():
        return pd.DataFrame()
    before, now = (pd.read_csv(path, dtype={"setting": str}) for path in (published, table))
    if "setting" not in before or "setting" not in now:
        return pd.DataFrame()
    kept = before[~before["setting"].isin(set(now["setting"]))]
    runs = kept["run"].astype(str)  # trial_0000 may name a new run too
    return kept.assign(run=runs.where(runs.str.startswith("earlier/"), "earlier/" + runs))


def judge(study, study_dir, budget):
    """Write the claims of `study` over the series in `study_dir` (run folders or published tables)."""
    claims = write_claims(study, study_dir, budget)
    decided = sum(row["verdict"] != "undecided" for row in claims)
    print(f"study {study['name']}: {decided} of {len(claims)} claims decided, in {Path(study_dir) / 'claims.md'}")


def _first_lines(path):
    """The comment block a study file opens with."""
    lines = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").rstrip())
    return lines


@user_errors(interrupted="interrupted: run the same command again to resume; finished runs are kept")
def main(argv=None):
    parser = ArgumentParser(prog="python -m tuning.study", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the shipped studies with their commands")
    run = commands.add_parser("run", help="run (or resume) a study's series")
    run.add_argument("study", help="a study file, or the name of a shipped one")
    run.add_argument("--data", help="FER2013 CSV (default: $FER2013_CSV, else the synthetic set)")
    run.add_argument("--budget", choices=BUDGETS, default="quick", help="epochs and data limit (default quick; middle: 20-40%% of the projects' epochs on all of Training)")
    run.add_argument("--repeats", type=int, default=1, help="seeds per variant: mean +- std in the comparison")
    run.add_argument("--out", default="studies", help="folder of studies (default: studies)")
    run.add_argument("--series", nargs="+", help="run only these series")
    run.add_argument("--epochs", type=int, help="epochs of every run instead of the budget's")
    run.add_argument("--limit", type=int, help="data rows of every run instead of the budget's limit")
    run.add_argument("--wandb", choices=config_lib.OPTIONS["wandb"].choices, help="W&B mode of the runs")
    share = commands.add_parser("publish", help="copy a study's claims and comparisons, without its runs")
    share.add_argument("study_dir", help="a study's results folder (OUT/STUDY of `run`)")
    share.add_argument("--out", required=True, help="folder to copy into (as OUT/STUDY)")
    share.add_argument("--study", help="the study file (default: the shipped study named like the folder)")
    again = commands.add_parser("claims", help="judge a study's claims again (e.g. a published one, after "
                                "editing its claims)")
    again.add_argument("study_dir", help="a study's results folder, with run folders or published tables")
    again.add_argument("--budget", choices=BUDGETS, required=True, help="the budget its runs had")
    again.add_argument("--study", help="the study file (default: the shipped study named like the folder)")
    args = parser.parse_args(argv)
    if args.command == "publish":
        publish(args.study_dir, args.out, args.study)
        return 0
    if args.command == "claims":
        judge(load_study(args.study or Path(args.study_dir).name), args.study_dir, args.budget)
        return 0
    if args.command == "list":
        for path in list_studies():
            print(f"{path.stem}: " + "\n    ".join(_first_lines(path)) + "\n")
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    overrides = {k: v for k, v in (("data", args.data), ("wandb", args.wandb)) if v is not None}
    study = load_study(args.study)
    shrunk = {k: v for k, v in (("epochs", args.epochs), ("limit", args.limit)) if v is not None}
    study["budgets"][args.budget] = {**study["budgets"][args.budget], **shrunk}
    run_study(study, out=args.out, budget=args.budget, repeats=args.repeats, overrides=overrides, only=args.series)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
