"""Studies: a study file's series as grid searches over variants and seeds, compared per series and
overall, resumed after a kill without retraining a finished variant, and run by a chief and two
workers."""

import csv
import itertools
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fer_keras.errors import FerError
from tuning import claims as claims_lib
from tuning import study as study_lib
from tuning.summary import load_trials
from fer_keras.core.runs import TRIAL_FILE

REPO = Path(__file__).resolve().parents[1]
MINI = {
    "project": "a test study",
    "seed_file": "none",
    "base": {"model": "tiny_cnn", "model_args": {"widths": [8]}, "batch_size": 32, "wandb": "disabled"},
    "budgets": {"quick": {"epochs": 1, "limit": 300}, "middle": {"epochs": 1, "limit": 450},
                "full": {"epochs": 2, "limit": 600}},
    "series": {
        "architecture": {"variants": {"tiny": {}, "simple": {"model": "simple_cnn", "learning_rate": 3e-3}},
                         "reported": {"tiny": 57.5, "simple": "overfit"}},
        "lr": {"grid": {"learning_rate": [1e-3, 3e-3]}},
    },
    "assumed": {"epochs": "1 (not stated)"},
    "claims": [{"claim": "simple beats tiny", "higher": "architecture/simple", "than": "architecture/tiny"},
               {"claim": "tiny has 50k parameters", "params": "tiny_cnn", "stated": 50000},
               {"claim": "cosine helps", "higher": "schedule/cosine", "than": "schedule/constant"}],
}


def write_study(tmp_path, study=MINI, name="mini"):
    path = tmp_path / f"{name}.yaml"
    path.write_text("# A test study.\n" + yaml.safe_dump(study))
    return path


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("change, message", [
    ({"budgets": {"quick": {"epochs": 1}}}, "needs budgets quick, middle, full"),
    ({"series": {"a b": {"grid": {"seed": [1]}}}}, "series 'a b' must be a name"),
    ({"series": {"x": {"variants": {"a": {}}, "extra": 1}}}, "series 'x' must be"),
    ({"serie": {}}, "unknown keys serie"),
    ({"series": {"lr": {"grid": {"learning_rate": [1e-3]}, "reported": {0.01: 50}}}},
     "series lr reports settings it does not run: 0.01 \\(it runs 0.001\\)"),
])
def test_bad_study_files_say_what_is_wrong(tmp_path, change, message):
    with pytest.raises(FerError, match=message):
        study_lib.load_study(write_study(tmp_path, {**MINI, **change}))


def _verdict(claim, values, stuck=()):
    values = {name: list(v) for name, v in values.items()}
    return claims_lib.judge(claim, values, {name: name in stuck for name in values})[0::2]


@pytest.mark.parametrize("claim, values, stuck, verdict, why", [
    ({"higher": "a/x", "than": "a/y"}, {"a/x": [60.0], "a/y": [55.0]}, (), "supported", "noise ±2.00 (1 seed)"),
    ({"higher": "a/x", "than": "a/y"}, {"a/x": [52.0], "a/y": [55.0]}, (), "contradicted", "difference -3.00"),
    ({"higher": "a/x", "than": "a/y"}, {"a/x": [56.0], "a/y": [55.0]}, (), "undecided", "needs 3 seeds"),
    ({"higher": "a/x", "than": "a/y"}, {"a/x": [56.0, 56.2, 55.8], "a/y": [55.0, 55.1, 54.9]}, (), "supported",
     "(3 seeds)"),
    ({"higher": "a/x", "than": "a/y"}, {"a/x": [56, 54, 58], "a/y": [55, 57, 53]}, (), "undecided", "within noise"),
    ({"not_higher": "a/x", "than": "a/y"}, {"a/x": [56, 54, 58], "a/y": [55, 57, 53]}, (), "supported",
     "within noise"),
    ({"higher": "a/x", "than": "a/y", "reported_difference": 8.0}, {"a/x": [56, 54, 58], "a/y": [55, 57, 53]}, (),
     "contradicted", "within noise, 7.00 short of the project's +8.00"),
    ({"higher": "a/x", "than": "a/y", "reported_difference": 3.0}, {"a/x": [56, 54, 58], "a/y": [55, 57, 53]}, (),
     "undecided", "within noise"),
    ({"higher": "a/x", "than": "a/y", "reported_difference": 8.0}, {"a/x": [56.0], "a/y": [55.0]}, (), "undecided",
     "needs 3 seeds"),
    ({"not_higher": "a/x", "than": "a/y"}, {"a/x": [60.0], "a/y": [55.0]}, (), "contradicted", "+5.00"),
    ({"higher": "a/x", "than": "a/y", "metric": "minutes"}, {"a/x": [12.0], "a/y": [9.0]}, (), "supported",
     "difference +3.00 min (1.33x), noise"),
    ({"lower": "a/x", "than": "a/y", "metric": "gap"}, {"a/x": [3.0], "a/y": [9.0]}, (), "supported", "-6.00"),
    ({"higher": "a/x", "than": "a/y"}, {"a/x": [60.0], "a/y": [25.0]}, ("a/y",), "undecided",
     "a/y never left the majority class"),
    ({"at_most": 30, "of": "a/x"}, {"a/x": [25.1]}, ("a/x",), "supported", "mean 25.10 against 30"),
    ({"at_most": 30, "of": "a/x"}, {"a/x": [45.0]}, (), "contradicted", "mean 45.00"),
    ({"near": 58, "of": "a/x", "budget": "middle"}, {"a/x": [57.0]}, (), "supported", "against 58"),
    ({"near": 58, "of": "a/x", "budget": "middle"}, {"a/x": [50.0]}, (), "undecided", "longer training may"),
    ({"near": 58, "of": "a/x", "budget": "full"}, {"a/x": [50.0]}, (), "contradicted", "against 58"),
    ({"near": 26, "of": "a/x", "budget": "middle"}, {"a/x": [35.0]}, (), "contradicted", "against 26"),
    ({"higher": "a/x", "than": "a/y"}, {"a/x": [60.0], "a/y": []}, (), "undecided", "not run: a/y"),
])
def test_a_claim_is_decided_only_beyond_noise(claim, values, stuck, verdict, why):
    got, said = _verdict(claim, values, stuck)
    assert got == verdict and why in said


@pytest.mark.parametrize("budget, rising, values, verdict, marked", [
    ("middle", {"a/x": True, "a/y": False}, {"a/x": [60.0], "a/y": [55.0]}, "supported",
     "provisional: a/x still improving"),
    ("middle", {"a/x": False, "a/y": False}, {"a/x": [60.0], "a/y": [55.0]}, "supported", None),
    ("full", {"a/x": True, "a/y": True}, {"a/x": [60.0], "a/y": [55.0]}, "supported", None),
    ("middle", {"a/x": True, "a/y": True}, {"a/x": [56.0], "a/y": [55.0]}, "undecided", None),
])
def test_a_decision_short_of_the_full_budget_is_provisional_while_a_side_still_improves(budget, rising, values,
                                                                                         verdict, marked):
    claim = {"higher": "a/x", "than": "a/y", "budget": budget}
    got, _, why = claims_lib.judge(claim, values, dict.fromkeys(values, False), rising)
    assert got == verdict
    assert (marked in why) if marked else "provisional" not in why


def test_a_published_table_without_settings_cannot_be_judged(tmp_path):
    table = tmp_path / "lr" / "comparison" / "comparison.csv"
    table.parent.mkdir(parents=True)
    table.write_text("run,val_accuracy\ntrial_0000,0.5\n")
    with pytest.raises(FerError, match=r"lr/comparison/comparison.csv has no setting column: compare"):
        claims_lib.setting_runs(tmp_path / "lr")
    assert claims_lib.setting_runs(tmp_path / "schedule") == {}


def test_a_claims_reported_margin_is_read_from_both_sides_reported_figures():
    study = {"series": {"lr": {"reported": {0.01: 58.0, 0.001: 55.5, 0.1: "diverged"}}}}
    margin = claims_lib.reported_difference
    assert margin(study, {"higher": "lr/0.01", "than": "lr/0.001"}) == pytest.approx(2.5)
    assert margin(study, {"lower": "lr/0.01", "than": "lr/0.001"}) == pytest.approx(-2.5)
    assert margin(study, {"higher": "lr/0.01", "than": "lr/0.1"}) is None  # words, not a figure
    assert margin(study, {"higher": "lr/0.01", "than": "lr/0.001", "metric": "gap"}) is None
    assert margin(study, {"not_higher": "lr/0.01", "than": "lr/0.001"}) is None


def test_parameter_claims_are_decided_from_the_built_networks():
    verdict, measured, why = claims_lib.judge_params({"params": "simple_cnn", "per": "mlp", "stated": 0.1})
    assert verdict == "contradicted" and measured == "simple_cnn 1,207,303; mlp 1,345,287" and "ratio 0.897" in why
    assert claims_lib.judge_params({"params": "resnet_fer_wide", "stated": 2778311})[0] == "supported"


def test_variants_resolve_over_the_study_base_each_with_its_own_settings(tmp_path):
    study = study_lib.load_study(write_study(tmp_path))
    space = study_lib.series_space(study, "architecture", "quick", repeats=2, overrides={})
    assert [d for d in space.dims] == ["variant", "seed"]
    tiny = space.trial_config({"variant": "tiny", "seed": 1}, epochs=1)
    simple = space.trial_config({"variant": "simple", "seed": 0}, epochs=1)
    assert (tiny["model"], tiny["model_args"], tiny["learning_rate"], tiny["seed"]) == ("tiny_cnn", {"widths": [8]},
                                                                                        1e-3, 1)
    # A variant switching the network starts from that network's defaults, with its own settings.
    assert (simple["model"], simple["model_args"], simple["learning_rate"]) == ("simple_cnn", {}, 3e-3)
    assert tiny["limit"] == simple["limit"] == 300 and simple["batch_size"] == 32  # budget and base for all
    alone = {**study, "series": {"one": {"variants": {"tiny": study["series"]["architecture"]["variants"]["tiny"]}}}}
    space = study_lib.series_space(alone, "one", "quick", repeats=1, overrides={})
    assert space.dims["variant"].args["values"] == ["tiny"]  # a lone variant names its runs' setting, not "-"
    assert study_lib.series_settings(alone["series"]["one"]) == ["tiny"]


def test_the_five_projects_each_have_a_study_listed_with_its_command(capsys):
    assert [p.stem for p in study_lib.list_studies()] == ["p000", "p001", "p002", "p003", "p004"]
    assert study_lib.main(["list"]) == 0
    listed = capsys.readouterr().out
    for name in ("p000", "p001", "p002", "p003", "p004"):
        assert f"python -m tuning.study run {name} --data" in listed


@pytest.mark.parametrize("path", study_lib.list_studies(), ids=lambda p: p.stem)
def test_every_run_of_a_shipped_study_resolves_at_every_budget(path):
    study = study_lib.load_study(path.stem)
    header = " ".join(study_lib._first_lines(path))
    assert study["seed_file"] in header and all(budget in header for budget in study_lib.BUDGETS)
    assert study["assumed"] and len(study["claims"]) >= 6
    assert all(set(b) == {"epochs", "limit"} for b in study["budgets"].values())
    assert study["budgets"]["full"]["limit"] is None  # the original projects trained on all of Training
    assert study["budgets"]["middle"]["limit"] is None
    assert 0.2 <= study["budgets"]["middle"]["epochs"] / study["budgets"]["full"]["epochs"] <= 0.5
    settings = {f"{name}/{setting}" for name, series in study["series"].items()
                for setting in study_lib.series_settings(series)}
    for claim in study["claims"]:  # every claim names settings the study runs, or a network
        named = [claim[k] for k in ("higher", "lower", "not_higher", "than", "of") if k in claim]
        assert set(named) <= settings and (named or claim["params"]), claim
        assert claim.get("metric", "val") in claims_lib.METRICS
    for series, budget in itertools.product(study["series"], study_lib.BUDGETS):
        space = study_lib.series_space(study, series, budget, repeats=1, overrides={})
        epochs = study["budgets"][budget]["epochs"]
        for values in itertools.product(*(dim.args["values"] for dim in space.dims.values())):
            cfg = space.trial_config(dict(zip(space.dims, values)), epochs)
            assert (cfg["epochs"], cfg["limit"]) == (epochs, study["budgets"][budget]["limit"])


@pytest.mark.slow
def test_a_shipped_study_runs_on_the_synthetic_set_with_a_shrunk_budget(tmp_path):
    """p004 (fewest runs with p001): every series on the synthetic set, 1 epoch of 200 rows per run."""
    study = study_lib.load_study("p004")
    args = ["run", "p004", "--epochs", "1", "--limit", "200", "--wandb", "disabled", "--out", str(tmp_path)]
    assert study_lib.main(args) == 0
    out = tmp_path / "p004"
    for series, spec in study["series"].items():
        assert sorted(r["variant"] for r in rows(out / series / "comparison" / "comparison.csv")) == sorted(
            spec["variants"])
    overall = rows(out / "comparison" / "comparison.csv")
    assert len(overall) == 7 and {r["epochs"] for r in overall} == {"1"}
    models = {(r["run"].split("/")[0], r["variant"]): r["model"] for r in overall}
    assert models == {("baseline", "v1"): "baseline_cnn", ("baseline", "v2"): "p004_baseline_cnn_v2",
                      ("deep", "v1"): "p004_deep_cnn_v1", ("deep", "v2"): "deep_cnn_v2", ("deep", "v3"): "deep_cnn_v2",
                      ("attention", "cbam_as_it_was"): "p004_cbam_cnn", ("attention", "cbam_paper"): "cbam_cnn"}
    configs = [json.loads(p.read_text()) for p in out.glob("*/trial_*/config.json")]
    assert {(c["data"], c["limit"], c["precision"]) for c in configs} == {(None, 200, "auto")}


@pytest.mark.slow
def test_a_study_runs_every_series_compares_them_and_resumes(tmp_path, capsys):
    args = ["run", str(write_study(tmp_path)), "--repeats", "2", "--out", str(tmp_path / "out")]
    assert study_lib.main(args) == 0
    out = tmp_path / "out" / "mini"
    arch = rows(out / "architecture" / "comparison" / "comparison.csv")
    assert sorted((r["variant"], r["seed"]) for r in arch) == [("simple", "0"), ("simple", "1"), ("tiny", "0"),
                                                               ("tiny", "1")]
    assert all(r["setting"] == r["variant"] for r in arch)
    spread = rows(out / "architecture" / "comparison" / "comparison_over_seeds.csv")
    assert sorted(r["variant"] for r in spread) == ["simple", "tiny"] and {r["seeds"] for r in spread} == {"2"}
    assert len(rows(out / "lr" / "comparison" / "comparison.csv")) == 4
    for trial in (out / "lr").glob("trial_*"):  # lr 0.001 is architecture/tiny: trained once, reused
        record = json.loads((trial / TRIAL_FILE).read_text())
        if record["values"]["learning_rate"] == 1e-3:
            source = Path(record["reused_from"])
            assert json.loads((source / TRIAL_FILE).read_text())["values"] == {"variant": "tiny",
                                                                               "seed": record["values"]["seed"]}
            assert (trial / "history.csv").read_text() == (source / "history.csv").read_text()
            assert (trial / "metrics.json").read_text() == (source / "metrics.json").read_text()
        else:
            assert "reused_from" not in record
    assert capsys.readouterr().out.count("its run is reused, not trained again") == 2
    assert len(rows(out / "comparison" / "comparison.csv")) == 8  # every run of the study
    for name in ("curves.png", "per_class.png"):
        assert (out / "comparison" / name).stat().st_size > 1000
    claims = {(r["series"], r["setting"]): r for r in rows(out / "settings.csv")}
    assert sorted(claims) == [("architecture", "simple"), ("architecture", "tiny"), ("lr", "0.001"),
                              ("lr", "0.003")]
    assert (claims["architecture", "tiny"]["reported"], claims["architecture", "simple"]["reported"]) == (
        "57.50%", "overfit")
    tiny = [float(r["test_accuracy"]) * 100 for r in arch if r["variant"] == "tiny"]
    mean, std = claims["architecture", "tiny"]["test_accuracy"].split(" ± ")
    assert float(mean) == pytest.approx(sum(tiny) / 2, abs=0.01) and claims["lr", "0.001"]["runs"] == "2"
    assert "57.50%" in (out / "claims.md").read_text() and "- epochs: 1 (not stated)" in (out / "claims.md").read_text()
    verdicts = {r["claim"]: r for r in rows(out / "claims.csv")}
    assert list(verdicts) == [c["claim"] for c in MINI["claims"]]
    assert {r["verdict"] for r in verdicts.values()} <= {"supported", "contradicted", "undecided"}
    assert verdicts["simple beats tiny"]["seeds"] == "2" and "architecture/simple" in verdicts["simple beats tiny"]["measured"]
    assert verdicts["tiny has 50k parameters"]["verdict"] == "contradicted"  # 64,679
    assert verdicts["cosine helps"]["why"] == "not run: schedule/cosine, schedule/constant"
    publish = ["publish", "--study", str(write_study(tmp_path)), "--out", str(tmp_path / "shared")]
    assert study_lib.main([*publish[:1], str(out), *publish[1:]]) == 0
    shared = sorted(str(p.relative_to(tmp_path / "shared" / "mini")) for p in (tmp_path / "shared").rglob("*.*"))
    assert "claims.md" in shared and "architecture/comparison/curves.png" in shared
    assert not any(p.startswith("comparison/") for p in shared)  # settings.csv is the study's table
    assert all(p.split("/")[-1].rsplit(".")[-1] in ("md", "csv", "png") and "trial_" not in p for p in shared)
    judged = rows(tmp_path / "shared" / "mini" / "claims.csv")  # from the published tables, as from the runs
    assert [(r["verdict"], r["seeds"], r["why"]) for r in judged] == [
        (r["verdict"], r["seeds"], r["why"]) for r in verdicts.values()]
    later = tmp_path / "later" / "mini"  # a later run of one series only: the published other one stays
    shutil.copytree(out, later, ignore=shutil.ignore_patterns("architecture"))
    (later / "lr" / "comparison" / "comparison_over_seeds.csv").unlink()  # as a one-seed run of lr writes none
    shutil.copytree(later / "lr", later / "lr_copy")  # a folder that is no series of the study is not published
    assert study_lib.main([*publish[:1], str(later), *publish[1:]]) == 0
    assert not (tmp_path / "shared" / "mini" / "lr_copy").exists()
    assert not (tmp_path / "shared" / "mini" / "lr" / "comparison" / "comparison_over_seeds.csv").exists()
    assert rows(tmp_path / "shared" / "mini" / "claims.csv") == judged
    assert {r["series"] for r in rows(tmp_path / "shared" / "mini" / "settings.csv")} == {"architecture", "lr"}
    table = later / "lr" / "comparison" / "comparison.csv"  # then lr 0.003 alone: 0.001's runs stay
    table.write_text("\n".join(line for line in table.read_text().splitlines() if ",0.001," not in line) + "\n")
    assert study_lib.main([*publish[:1], str(later), *publish[1:]]) == 0
    lr = tmp_path / "shared" / "mini" / "lr" / "comparison"
    table = rows(lr / "comparison.csv")
    assert sorted((r["setting"], r["run"].startswith("earlier/")) for r in table) == [
        ("0.001", True), ("0.001", True), ("0.003", False), ("0.003", False)]
    assert "Kept from the series published before (not run again, so not in this run's plots): 0.001." in (
        lr / "comparison.md").read_text()
    assert {r["seeds"] for r in rows(lr / "comparison_over_seeds.csv")} == {"2"}
    assert rows(tmp_path / "shared" / "mini" / "claims.csv") == judged
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/trial_*/metrics.json")}
    assert len(stamps) == 8
    capsys.readouterr()
    assert study_lib.main(args) == 0  # the same command again: nothing left to train
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/trial_*/metrics.json")} == stamps
    with pytest.raises(SystemExit) as exit_info:  # another budget is another study, not mixed in
        study_lib.main([*args, "--budget", "full"])
    assert exit_info.value.code == 2 and "started with other settings" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_study_reruns_no_finished_variant(tmp_path):
    study = {**MINI, "budgets": {"quick": {"epochs": 3, "limit": 1500}, "middle": {"epochs": 3}, "full": {"epochs": 3}},
             "series": {"lr": {"grid": {"learning_rate": [1e-3, 2e-3, 3e-3]}}}}
    args = [sys.executable, "-m", "tuning.study", "run", str(write_study(tmp_path, study)), "--out",
            str(tmp_path / "out")]
    series = tmp_path / "out" / "mini" / "lr"
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(list(series.glob("trial_*/metrics.json"))) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the study ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in series.glob("trial_*/metrics.json")}
    assert 1 <= len(finished) < 3
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # not trained again
    assert len(list(series.glob("trial_*/metrics.json"))) == 3
    configs = [json.loads(p.read_text())["learning_rate"] for p in series.glob("trial_*/config.json")]
    assert sorted(configs) == [1e-3, 2e-3, 3e-3]


@pytest.mark.slow
def test_a_distributed_study_with_a_chief_and_two_workers(tmp_path, kerastuner_cluster):
    """Both series of MINI, one after the other, by two workers; the chief serves each series' oracle
    (series i on its port + i) and writes the comparisons."""
    logs = kerastuner_cluster(["tuning.study", "run", str(write_study(tmp_path)), "--out", str(tmp_path / "out")],
                              ports=len(MINI["series"]))
    out = tmp_path / "out" / "mini"
    ran = {tuner_id: sum(" runs on tuner " in line for line in log.splitlines()) for tuner_id, log in logs.items()}
    assert ran["chief"] == 0 and ran["worker0"] + ran["worker1"] == 4  # every run once, none on the chief
    for series in MINI["series"]:
        trials = load_trials(out / series)
        assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials.values())
        for trial_id in trials:
            run = json.loads((out / series / f"trial_{trial_id}" / TRIAL_FILE).read_text())
            assert run["tuner_id"] in ("worker0", "worker1")
        assert len(rows(out / series / "comparison" / "comparison.csv")) == 2
    assert len(rows(out / "comparison" / "comparison.csv")) == 4
    written = [tuner_id for tuner_id, log in logs.items() if f"comparisons in {out}" in log]
    assert written == ["chief"]  # the workers leave the comparisons to the chief
