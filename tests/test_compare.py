"""fer_keras.evaluation.compare on plain runs and on a folder of runs: table, varying settings, plots."""

import csv

import pytest

from fer_keras.evaluation.compare import _plot_label, main
from fer_keras.training.train import main as train_main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny finished runs that differ in learning rate, in one parent folder."""
    root = tmp_path_factory.mktemp("runs")
    for name, lr in (("slow", "1e-3"), ("fast", "3e-3")):
        assert train_main(["--model", "tiny_cnn", "--limit", "300", "--epochs", "2", "--batch-size", "32",
                           "--learning-rate", lr, "--wandb", "disabled", "--no-export",
                           "--out", str(root / "study" / name)]) == 0
    return root / "study"


def _table(out):
    with open(out / "comparison.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_compare_plain_runs_writes_table_and_plots(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main([str(runs / "slow"), str(runs / "fast"), "--out", str(out)]) == 0
    rows = _table(out)
    assert [r["run"] for r in rows] == ["slow", "fast"]
    assert [float(r["learning_rate"]) for r in rows] == [1e-3, 3e-3]  # the setting that varies
    assert "optimizer" not in rows[0] and "out" not in rows[0]  # equal, or not an experiment's variable
    for row in rows:
        assert row["model"] == "tiny_cnn" and int(row["params"]) > 0 and int(row["macs"]) > 0
        assert 0 <= float(row["val_accuracy"]) <= 1 and row["test_macro_f1"] and row["epochs"] == "2"
        gap = float(row["train_accuracy"]) - float(row["val_accuracy"])
        assert float(row["gap"]) == pytest.approx(gap, abs=2e-4)  # 4 decimals each
    text = (out / "comparison.md").read_text()
    assert text.startswith("| run | model | params | macs |") and text.count("\n") == 4
    for name in ("curves.png", "per_class.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert "2 runs compared" in capsys.readouterr().out


def test_compare_finds_runs_below_a_folder(runs, tmp_path):
    assert main([str(runs), "--out", str(tmp_path / "all")]) == 0
    assert sorted(r["run"] for r in _table(tmp_path / "all")) == ["fast", "slow"]


def test_compare_refuses_a_folder_without_runs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "empty"), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'empty'}: no finished run in it")


def test_plot_labels_name_what_a_search_gave_each_run(tmp_path):
    trial = tmp_path / "lr" / "trial_0001"
    trial.mkdir(parents=True)
    (trial / "run.json").write_text('{"values": {"variant": "adam", "learning_rate": 0.001, "seed": 1}}')
    assert _plot_label(trial, "lr/trial_0001") == "lr/trial_0001 adam/0.001"
    assert _plot_label(tmp_path, "plain") == "plain"  # a plain run: no run.json
