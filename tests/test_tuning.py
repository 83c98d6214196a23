"""tuning/: search spaces, a tiny Hyperband search end to end (summary, best config that retrains,
resume, one W&B run per trial) and a distributed search with a chief and two worker processes."""

import csv
import json
import os
import shutil
from pathlib import Path

import keras_tuner as kt
import pytest

from fer_keras.training import config as config_lib
from wandb_offline import read_offline_run
from fer_keras.training import train as train_cli
from fer_keras.errors import FerError
from fer_keras.models import default_hparams, list_models
from tuning import search, spaces
from tuning import tuner as tuner_lib
from tuning.summary import load_trials
from fer_keras.core.runs import TRIAL_FILE

# Hyperband continuations load a checkpoint's weights without its optimizer state (KerasTuner).
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning")

REPO = Path(__file__).resolve().parents[1]
# A tiny search: tiny_cnn with 8 filters on 300 synthetic rows.
TINY = ["--model", "tiny_cnn", "--limit", "300", "--set", "widths=[8]", "--wandb", "offline"]


def _space(only=None, models=None, **overrides):
    return spaces.SearchSpace(config_lib.resolve_config(overrides), models=models, only=only)


# --- spaces -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list_models())
def test_space_defaults_are_the_builders_defaults(model):
    space = _space(model=model)
    hp = kt.HyperParameters()
    values = space.declare(hp)
    assert values == space.defaults() == hp.values
    cfg = space.trial_config(values, epochs=7)
    builder = default_hparams(model)
    assert {**builder, **cfg["model_args"]} == builder  # every searched builder value at its default
    assert set(cfg["model_args"]) == set(space.dims) - set(spaces.TRAINING_DIMS)
    assert {k: v for k, v in cfg.items() if k != "model_args"} == {
        **{k: v for k, v in space.base.items() if k != "model_args"}, "epochs": 7}
    assert "weight_decay" not in cfg["model_args"]  # the builder's L2 stays out of the search


def test_space_searches_each_builders_widths_depth_dropout():
    assert set(_space(model="resnet_fer").dims) == {"widths", "depth", "dropout", *spaces.TRAINING_DIMS}
    assert set(_space(model="cnn3").dims) == {"widths", "feature_dropout", "dense_units", "dropout",
                                              *spaces.TRAINING_DIMS}
    vit = _space(model="vit").dims
    assert {"width", "depth", "mlp_dim", "dropout"} <= set(vit) and "patch_size" not in vit
    widths = _space(model="simple_cnn").dims["widths"].args["values"]
    assert widths == ["16", "32", "64", "16,32", "32,64", "64,128", "16,32,64", "32,64,128", "64,128,256"]
    lr = _space().dims["learning_rate"].args
    assert (lr["min_value"], lr["max_value"], lr["sampling"]) == (1e-4, 1e-2, "log")
    assert _space().dims["optimizer"].args["values"] == ["adam", "adamw", "sgd", "rmsprop"]


def test_space_defaults_follow_the_base_config():
    space = _space(recipe="vit")
    defaults = space.defaults()
    assert (defaults["learning_rate"], defaults["optimizer"], defaults["weight_decay"]) == (1e-3, "adamw", 0.05)
    assert defaults["label_smoothing"] == 0.1 and defaults["batch_size"] == 128 and defaults["augment"] == "light"
    assert 0.05 in space.dims["weight_decay"].args["values"]
    tuned = _space(model="simple_cnn", model_args={"dropout": 0.25, "widths": [8, 16]})
    assert tuned.defaults()["dropout"] == 0.25 and tuned.defaults()["widths"] == "8,16"
    assert tuned.trial_config(tuned.defaults(), 3)["model_args"]["widths"] == (8, 16)


def test_only_searches_one_dimension_and_keeps_the_rest():
    space = _space(only=["learning_rate"], model="simple_cnn", model_args={"dropout": 0.3}, batch_size=32)
    assert list(space.dims) == ["learning_rate"]
    cfg = space.trial_config({"learning_rate": 0.005, "dropout": 0.6, "batch_size": 256}, epochs=4)
    expected = {**space.base, "learning_rate": 0.005, "epochs": 4}
    assert cfg == expected and cfg["model_args"] == {"dropout": 0.3} and cfg["batch_size"] == 32


def test_only_model_searches_the_architecture():
    space = _space(only=["model"], models=["simple_cnn", "tiny_cnn"], model="simple_cnn",
                   model_args={"dropout": 0.2})
    assert list(space.dims) == ["model"] and space.dims["model"].args["default"] == "simple_cnn"
    assert space.trial_config({"model": "tiny_cnn"}, 2)["model_args"] == {}  # other builder: its defaults
    assert space.trial_config({"model": "simple_cnn"}, 2)["model_args"] == {"dropout": 0.2}


@pytest.mark.parametrize("only, models, message", [
    (["dropout", "bogus"], None, "cannot search bogus"),
    (["dropout"], ["simple_cnn", "tiny_cnn"], "single --model"),
    (["learning_rate"], ["simple_cnn", "tiny_cnn"], "add `model` to --only"),
    (None, ["simple_cnn", "nope"], "unknown model nope"),
])
def test_space_rejects_what_it_cannot_search(only, models, message):
    with pytest.raises(FerError, match=message):
        _space(only=only, models=models, model="simple_cnn")


def test_saved_space_round_trips():
    space = _space(model="resnet_fer", only=["widths", "learning_rate"])
    again = spaces.SearchSpace.from_json(json.loads(json.dumps(space.to_json())))
    values = {"widths": "16,32", "learning_rate": 0.002}
    assert again.trial_config(values, 5) == space.trial_config(values, 5)
    assert again.trial_config(values, 5)["model_args"]["widths"] == (16, 32)


# --- CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, message", [
    (["--tuner", "random", "--factor", "2"], "--factor is for --tuner hyperband"),
    (["--max-trials", "3"], "--max-trials is for random and bayesian"),
    (["--only", "momentum"], "cannot search momentum"),
    (["--set", "learning_rate=-1"], "learning_rate"),
    (["--set", "strategy=multi_worker"], "strategy 'multi_worker' cannot train single trials"),
])
def test_cli_reports_user_errors(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        search.main(["--max-epochs", "2", "--out", str(tmp_path), "--name", "s", *TINY, *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_a_name_that_is_no_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        search.main(["--max-epochs", "2", "--out", str(tmp_path), "--name", "a/b"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --name 'a/b': use letters, digits, '-' and '_' (it names a folder and W&B runs)\n"
    assert not (tmp_path / "a").exists()


def test_a_search_folder_in_use_is_refused(tmp_path, capsys):
    from fer_keras.core.lock import folder_lock

    with folder_lock(tmp_path / "s", "search"), pytest.raises(SystemExit) as exit_info:
        search.main(["--max-epochs", "2", "--out", str(tmp_path), "--name", "s", *TINY])
    assert exit_info.value.code == 2
    assert f"error: {tmp_path / 's'} is in use by another search (process {os.getpid()})" in capsys.readouterr().err


def test_dry_run_prints_the_space(tmp_path, capsys):
    search.main(["--max-epochs", "2", "--out", str(tmp_path), "--name", "s", *TINY, "--only", "batch_size", "--dry-run"])
    shown = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in shown["dims"]] == ["batch_size"] and shown["factor"] == 3
    assert not (tmp_path / "s").exists()


# --- a tiny Hyperband search end to end ----------------------------------------------------------

# Every training dimension but weight_decay, whose base value (1e-4, from --set) must reach the best config.
HYPERBAND = [*TINY, "--tuner", "hyperband", "--max-epochs", "2", "--factor", "2", "--name", "hb",
             "--set", "weight_decay=1e-4", "--only", "widths", "learning_rate", "optimizer", "label_smoothing",
             "augment", "batch_size"]


@pytest.fixture(scope="module")
def hyperband_search(tmp_path_factory):
    """Run the tiny Hyperband search once (5 trials, one continuing another); its folder."""
    out = tmp_path_factory.mktemp("searches")
    assert search.main([*HYPERBAND, "--out", str(out)]) == 0
    return out / "hb"


def _summary(search_dir):
    with open(search_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_hyperband_search_writes_summary_and_best_config(hyperband_search):
    trials = load_trials(hyperband_search)
    assert len(trials) == 5 and all(t.status == "COMPLETED" for t in trials.values())
    continued = [t for t in trials.values() if "tuner/trial_id" in t.hyperparameters.values]
    assert len(continued) == 1 and continued[0].hyperparameters.values["tuner/initial_epoch"] == 1
    record = json.loads((hyperband_search / f"trial_{continued[0].trial_id}" / TRIAL_FILE).read_text())
    assert record["continued_from"] == continued[0].hyperparameters.values["tuner/trial_id"]

    rows = _summary(hyperband_search)
    assert sorted(r["trial"] for r in rows) == sorted(trials)
    scores = [float(r["val_accuracy"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert {"widths", "learning_rate", "optimizer", "batch_size", "augment", "bracket"} <= set(rows[0])
    table = (hyperband_search / "summary.md").read_text()
    assert "| rank | trial | status | val_accuracy |" in table and table.count("| COMPLETED |") == 5

    best = trials[rows[0]["trial"]]
    assert best.score == pytest.approx(scores[0])
    best_cfg = config_lib.resolve_config(config_file=hyperband_search / "best_config.json")
    values = best.hyperparameters.values
    assert best_cfg["model"] == "tiny_cnn" and best_cfg["limit"] == 300
    assert best_cfg["epochs"] == values["tuner/epochs"]
    assert best_cfg["model_args"]["widths"] == [int(w) for w in values["widths"].split(",")]
    for key in ("learning_rate", "optimizer", "label_smoothing", "augment", "batch_size"):
        assert best_cfg[key] == values[key]
    assert best_cfg["weight_decay"] == 1e-4


@pytest.mark.slow
def test_every_trial_folder_holds_a_full_run_record(hyperband_search):
    rows = {r["trial"]: r for r in _summary(hyperband_search)}
    for trial_id in load_trials(hyperband_search):
        trial_dir = hyperband_search / f"trial_{trial_id}"
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        for split in ("train", "val", "test"):
            assert {"accuracy", "loss", "macro_precision", "macro_recall", "macro_f1", "per_class",
                    "confusion_matrix"} <= set(metrics[split]), split
        assert metrics["train_val_gap"] == pytest.approx(metrics["train"]["accuracy"] - metrics["val"]["accuracy"])
        assert metrics["params"] > 0 and metrics["wall_time"] > 0
        assert "== test" in (trial_dir / "classification_report.txt").read_text()
        assert {p.name for p in (trial_dir / "plots").glob("*.png")} == {
            "history.png", "confusion_matrix_train.png", "confusion_matrix_val.png", "confusion_matrix_test.png"}
        # One best checkpoint per trial (KerasTuner reloads it too), and the summary shows the record.
        assert [p.name for p in trial_dir.glob("*checkpoint*")] == [] and (trial_dir / "model.keras").exists()
        assert float(rows[trial_id]["params"]) == metrics["params"]
        assert float(rows[trial_id]["test_accuracy"]) == pytest.approx(metrics["test"]["accuracy"])


@pytest.mark.slow
def test_best_config_retrains_with_fer_keras_train(hyperband_search, tmp_path):
    run_dir = tmp_path / "retrain"
    code = train_cli.main(["--config", str(hyperband_search / "best_config.json"), "--epochs", "1",
                           "--out", str(run_dir), "--no-export", "--wandb", "disabled"])
    assert code == 0
    saved = json.loads((run_dir / "config.json").read_text())
    best = json.loads((hyperband_search / "best_config.json").read_text())
    assert {k: saved[k] for k in ("model", "model_args", "learning_rate", "optimizer", "batch_size")} == {
        k: best[k] for k in ("model", "model_args", "learning_rate", "optimizer", "batch_size")}
    assert "accuracy" in json.loads((run_dir / "metrics.json").read_text())["val"]


@pytest.mark.slow
def test_each_trial_is_one_wandb_run_in_the_search_group(hyperband_search):
    for trial_id, trial in load_trials(hyperband_search).items():
        trial_dir = hyperband_search / f"trial_{trial_id}"
        run = read_offline_run(trial_dir)
        values = trial.hyperparameters.values
        assert run["id"] == run["name"] == f"hb-{trial_id}" and run["group"] == "hb"
        assert run["config"]["tuning"]["hyperparameters"] == values
        assert run["config"]["learning_rate"] == values["learning_rate"]
        assert run["config"]["batch_size"] == values["batch_size"]
        epochs = [row for row in run["history"] if "epoch/epoch" in row]
        trained = values["tuner/epochs"] - values["tuner/initial_epoch"]
        assert [row["epoch/epoch"] for row in epochs] == list(range(values["tuner/initial_epoch"], values["tuner/epochs"]))
        assert len(epochs) == trained and all("epoch/val_accuracy" in row and "epoch/loss" in row for row in epochs)
        assert not (trial_dir / "backup").exists()
    runs = list((Path(os.environ["WANDB_DIR"]) / "wandb").glob("offline-run-*-hb-*"))
    assert len(runs) == 5


@pytest.mark.slow
def test_a_trial_of_settings_already_trained_reuses_that_run(hyperband_search, tmp_path):
    source = next(p.parent for p in sorted(hyperband_search.glob("trial_*/run.json"))
                  if "continued_from" not in json.loads(p.read_text()))
    cfg = {**json.loads((source / "config.json").read_text()), "out": str(tmp_path / "trial_0000"), "tags": ["x"]}
    assert tuner_lib.finished_twin(cfg, hyperband_search.parent) is not None
    assert tuner_lib.finished_twin({**cfg, "learning_rate": 0.5}, hyperband_search.parent) is None
    other_machine = tmp_path / "elsewhere" / "s" / "trial_0000"
    shutil.copytree(source, other_machine)
    metrics = json.loads((source / "metrics.json").read_text())
    (other_machine / "metrics.json").write_text(json.dumps({**metrics, "machine": "another CPU"}))
    assert tuner_lib.finished_twin(cfg, tmp_path / "elsewhere") is None  # runs reproduce per machine kind

    trial_dir = tmp_path / "searches" / "study" / "trial_0000"
    trial_dir.mkdir(parents=True)
    (trial_dir / TRIAL_FILE).write_text(json.dumps({"tuner_id": "tuner0", "values": {"seed": 0}}))
    (trial_dir / "wandb_id.txt").write_text("study-0000\n")
    wandb_config = {**cfg, "wandb": "offline", "group": "p/study", "name": "study-0000"}
    tuner_lib.reuse_run(source, trial_dir, cfg, wandb_config)
    for name in ("metrics.json", "history.csv", "model.keras", "classification_report.txt"):
        assert (trial_dir / name).read_bytes() == (source / name).read_bytes()
    assert json.loads((trial_dir / "config.json").read_text()) == cfg
    assert json.loads((trial_dir / TRIAL_FILE).read_text()) == {"tuner_id": "tuner0", "values": {"seed": 0},
                                                                "reused_from": str(source)}
    run = read_offline_run(trial_dir)
    history = list(csv.DictReader(open(source / "history.csv")))
    epochs = [row for row in run["history"] if "epoch/epoch" in row]
    assert [row["epoch/epoch"] for row in epochs] == [int(row["epoch"]) for row in history]
    assert [row["epoch/val_accuracy"] for row in epochs] == pytest.approx([float(r["val_accuracy"]) for r in history])
    assert run["group"] == "p/study" and "reused" in run["tags"] and run["config"]["reused_from"] == str(source)
    assert run["summary"]["val/accuracy"] == pytest.approx(metrics["val"]["accuracy"])
    assert tuner_lib.finished_twin(cfg, tmp_path / "searches") is None  # a reused run is no source itself


@pytest.mark.slow
def test_rerun_resumes_without_redoing_trials(hyperband_search, capsys):
    out = hyperband_search.parent
    wandb_runs = sorted((Path(os.environ["WANDB_DIR"]) / "wandb").glob("offline-run-*-hb-*"))
    stamps = {p: p.stat().st_mtime_ns for p in hyperband_search.glob("trial_*/*.json")}
    assert search.main([*HYPERBAND, "--out", str(out)]) == 0
    assert "Reloading Tuner" in capsys.readouterr().out
    assert sorted((Path(os.environ["WANDB_DIR"]) / "wandb").glob("offline-run-*-hb-*")) == wandb_runs
    assert {p: p.stat().st_mtime_ns for p in hyperband_search.glob("trial_*/*.json")} == stamps
    assert len(_summary(hyperband_search)) == 5

    with pytest.raises(SystemExit):  # another space under the same name is refused, not mixed in
        search.main([*HYPERBAND, "--out", str(out), "--only", "learning_rate"])
    assert "started with other settings" in capsys.readouterr().err


# --- distributed: a chief and two workers on 127.0.0.1 -------------------------------------------


@pytest.mark.slow
def test_distributed_search_with_a_chief_and_two_workers(tmp_path, kerastuner_cluster):
    out = tmp_path / "searches"
    logs = kerastuner_cluster(["tuning.search", *TINY, "--tuner", "random", "--max-trials", "4", "--max-epochs", "2",
                               "--only", "learning_rate", "--out", str(out), "--name", "dist"])
    search_dir = out / "dist"
    trials = load_trials(search_dir)
    assert len(trials) == 4 and all(t.status == "COMPLETED" for t in trials.values())
    claimed = {tuner_id: [line.split()[1] for line in log.splitlines()
                          if line.startswith("trial ") and " runs on tuner " in line]
               for tuner_id, log in logs.items()}
    assert claimed["chief"] == []  # the chief only serves the oracle
    done = claimed["worker0"] + claimed["worker1"]
    assert sorted(done) == sorted(trials)  # every trial once, by a worker
    for trial_id in trials:
        ran_on = json.loads((search_dir / f"trial_{trial_id}" / TRIAL_FILE).read_text())["tuner_id"]
        assert trial_id in claimed[ran_on]
        run = read_offline_run(search_dir / f"trial_{trial_id}")
        assert run["group"] == "dist" and run["config"]["tuning"]["tuner_id"] == ran_on
    assert len(_summary(search_dir)) == 4 and (search_dir / "best_config.json").exists()


# --- grid search: the original projects' exact series ---------------------------------------------


def test_grid_values_are_read_like_set_values():
    assert search.parse_grid(["learning_rate=1e-4, 1e-3,1e-2", "widths=[8,16],[16]", "schedule=cosine,plateau",
                              "name=x"]) == {
        "learning_rate": [1e-4, 1e-3, 1e-2], "widths": [[8, 16], [16]], "schedule": ["cosine", "plateau"],
        "name": ["x"]}
    with pytest.raises(FerError, match="given twice"):
        search.parse_grid(["dropout=0.1", "dropout=0.2"])


@pytest.mark.parametrize("grid, message", [
    (["learning_rate=0.1,inf"], "'learning_rate': expected a finite number > 0, got inf"),
    (["wandb=offline,disabled"], "--grid wandb: wandb is not a training setting a grid can vary"),
    (["model=tiny_cnn,resnet_fer", "dense_units=[64]"], "--grid dense_units: model 'tiny_cnn' has no hyperparameter"),
    (["dropout=0.3,x"], "hyperparameter dropout: expected a finite number"),
])
def test_grid_refuses_what_it_cannot_vary(tmp_path, capsys, grid, message):
    args = ["--tuner", "grid", "--max-epochs", "1", "--out", str(tmp_path), "--name", "g", "--dry-run"]
    with pytest.raises(SystemExit) as exit_info:
        search.main([*args, *(f"--grid={g}" for g in grid)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_a_tuner_pauses_before_asking_again_after_getting_no_trial(tmp_path, monkeypatch):
    """A distributed worker told "no trial yet" (others finish the last ones) must not spin on the oracle."""
    tuner = tuner_lib.make_tuner("grid", tuner_lib.FerHyperModel(_space(only=["learning_rate"]), 1),
                                 directory=tmp_path, name="idle", max_trials=None)
    naps = []
    monkeypatch.setattr(tuner_lib.time, "sleep", naps.append)
    tuner.pre_create_trial()
    assert naps == []  # the first request
    tuner.pre_create_trial()
    assert naps == [tuner_lib.IDLE_WAIT]  # the request before got no trial
    tuner.on_trial_begin(tuner.oracle.create_trial("tuner0"))
    tuner.pre_create_trial()
    assert naps == [tuner_lib.IDLE_WAIT]  # the request before got one


def test_grid_search_trains_every_combination_once_and_resumes(tmp_path, capsys):
    args = [*TINY, "--tuner", "grid", "--grid", "learning_rate=1e-3,3e-3", "--grid", "model=tiny_cnn,simple_cnn",
            "--grid", "batch_size=32", "--max-epochs", "1", "--out", str(tmp_path), "--name", "g", "--wandb",
            "disabled"]
    assert search.main(args) == 0
    rows = _summary(tmp_path / "g")
    combos = sorted((float(r["learning_rate"]), r["model"]) for r in rows)
    assert combos == [(1e-3, "simple_cnn"), (1e-3, "tiny_cnn"), (3e-3, "simple_cnn"), (3e-3, "tiny_cnn")]
    for trial_id in load_trials(tmp_path / "g"):
        saved = json.loads((tmp_path / "g" / f"trial_{trial_id}" / "config.json").read_text())
        row = next(r for r in rows if r["trial"] == trial_id)
        assert (saved["model"], saved["learning_rate"], saved["batch_size"]) == (row["model"],
                                                                                  float(row["learning_rate"]), 32)
        # A model switched by the grid starts from its own builder defaults, not the base's widths.
        assert saved["model_args"] == ({"widths": [8]} if saved["model"] == "tiny_cnn" else {})
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "g").glob("trial_*/metrics.json")}
    capsys.readouterr()
    assert search.main(args) == 0  # resumes: nothing left to train
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "g").glob("trial_*/metrics.json")} == stamps
    assert len(_summary(tmp_path / "g")) == 4
