"""W&B tracking: a real offline run is logged, then read back from its .wandb file (no mocks)."""

import time
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from fer_keras import tracking
from fer_keras.constants import NUM_CLASSES
from fer_keras.evaluate import evaluate_model
from fer_keras.models.common import image_input, logits
from wandb_offline import read_offline_run


def _tiny_model():
    inputs, x = image_input()
    model = keras.Model(inputs, logits(keras.layers.GlobalAveragePooling2D()(x)))
    model.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def _split(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    return SimpleNamespace(images=rng.integers(0, 256, (n, 48, 48, 1), dtype=np.uint8), labels=labels)


CFG = {
    "model": "tiny", "recipe": "quick", "tags": ["unit"], "name": None, "group": None,
    "wandb": "auto", "learning_rate": 0.001, "model_args": {"width": 8}, "odd.key": 1,
}


@pytest.mark.slow
def test_offline_run_is_logged_and_read_back(tmp_path):
    run_dir = tmp_path / "tiny-run"
    run = tracking.start_run(CFG, run_dir)
    assert run is not None and run.settings.mode == "offline"

    splits = {"train": _split(32, 0), "val": _split(16, 1)}
    model = _tiny_model()
    one_hot = {k: keras.utils.to_categorical(s.labels, NUM_CLASSES) for k, s in splits.items()}
    model.fit(splits["train"].images, one_hot["train"], validation_data=(splits["val"].images, one_hot["val"]),
              epochs=2, batch_size=16, verbose=0, callbacks=[tracking.metrics_logger(run)])
    results = evaluate_model(model, splits, verbose=0)
    model_path = run_dir / "model.keras"
    model.save(model_path)
    tracking.log_results(run, results, model_path=model_path, extra={"params": model.count_params()})
    tracking.finish(run)

    logged = read_offline_run(run_dir)
    assert logged["id"] == (run_dir / tracking.ID_FILE).read_text().strip()
    assert logged["name"] == "tiny-run" and logged["group"] == "tiny" and logged["job_type"] == "train"
    assert logged["project"] == "fer_keras"
    assert set(logged["tags"]) == {"unit", "tiny", "quick"}
    assert logged["config"]["learning_rate"] == 0.001
    assert logged["config"]["model_args"] == {"width": 8}
    assert logged["config"]["odd_key"] == 1 and "odd.key" not in logged["config"]

    epochs = [row for row in logged["history"] if "epoch/epoch" in row]
    assert [row["epoch/epoch"] for row in epochs] == [0, 1]
    for row in epochs:
        assert {"epoch/accuracy", "epoch/loss", "epoch/val_accuracy", "epoch/val_loss",
                "epoch/learning_rate"} <= row.keys()
    assert epochs[0]["epoch/learning_rate"] == pytest.approx(0.001)
    tables = [row for row in logged["history"] if "per_class" in row]
    assert tables[0]["per_class"]["_type"] == "table-file" and tables[0]["per_class"]["nrows"] == 14
    assert tables[0]["val/confusion_matrix_table"]["nrows"] == NUM_CLASSES**2

    summary = logged["summary"]
    for split in ("train", "val"):
        assert summary[f"{split}/accuracy"] == pytest.approx(results[split]["accuracy"])
        assert summary[f"{split}/macro_f1"] == pytest.approx(results[split]["macro_f1"])
        assert summary[f"{split}/loss"] == pytest.approx(results[split]["loss"])
    assert summary["train_val_gap"] == pytest.approx(results["train"]["accuracy"] - results["val"]["accuracy"])
    assert summary["params"] == model.count_params()
    assert summary["epoch/epoch"] == 1

    models = [a for a in logged["artifacts"] if a["type"] == "model"]
    assert [(a["name"], "best" in a["aliases"]) for a in models] == [(f"model-{logged['id']}", True)]


def test_same_run_folder_resumes_the_same_run(tmp_path):
    run_dir = tmp_path / "resumed"
    big = "x" * 100_000  # one record over several 32 KiB blocks of the .wandb log
    for value in (1, 2):
        # W&B names offline folders by the second: a real resume comes later than this loop would.
        time.sleep(1.1 * (value - 1))
        run = tracking.start_run(CFG, run_dir)
        run.log({"attempt": value, "blob": big})
        tracking.finish(run)
    logged = read_offline_run(run_dir)
    rows = [row for row in logged["history"] if "attempt" in row]
    assert [row["attempt"] for row in rows] == [1, 2] and rows[-1]["blob"] == big
    assert logged["summary"]["attempt"] == 2


def test_disabled_gives_no_run_and_every_call_accepts_none(tmp_path, capsys):
    run = tracking.start_run({**CFG, "wandb": "disabled"}, tmp_path / "off")
    assert run is None
    assert tracking.metrics_logger(run) is None
    tracking.log_results(run, {"val": {}}, model_path=tmp_path / "missing.keras")
    tracking.finish(run)
    assert not (tmp_path / "off").exists()
    # The calls are guarded (a W&B failure only warns): no warning means none of them failed.
    assert capsys.readouterr().err == ""


def test_wandb_failure_during_fit_does_not_stop_training(tmp_path, capsys):
    run = tracking.start_run(CFG, tmp_path / "broken")
    logger = tracking.metrics_logger(run)
    run.finish()  # every later wandb.log raises
    data = _split(8, 0)
    history = _tiny_model().fit(data.images, keras.utils.to_categorical(data.labels, NUM_CLASSES),
                                epochs=2, verbose=0, callbacks=[logger])
    assert len(history.history["loss"]) == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: W&B")]
    assert len(warnings) == 2 and "on_epoch_end failed" in warnings[0]


@pytest.mark.parametrize("case", ["bad_mode", "run_dir_is_a_file"])
def test_wandb_failure_warns_instead_of_raising(case, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_DIR")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the run folder should go")
    cfg, run_dir = ({**CFG, "wandb": "bogus"}, tmp_path / "run") if case == "bad_mode" else (CFG, blocker / "run")
    assert tracking.start_run(cfg, run_dir) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: W&B start_run failed")
    assert ("unknown W&B mode 'bogus'" in err[0]) == (case == "bad_mode")


def test_auto_mode_is_online_only_with_an_api_key(tmp_path, monkeypatch):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert tracking.resolve_mode("auto") == "offline"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'k' * 40}\n")
    assert tracking.resolve_mode("auto") == "online"
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert tracking.resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert tracking.resolve_mode("auto") == "offline"
    assert tracking.resolve_mode("disabled") == "disabled"


def test_read_offline_run_without_a_run_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no offline W&B run"):
        read_offline_run(tmp_path)
