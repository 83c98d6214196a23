"""W&B tracking: a real offline run is logged, then read back from its .wandb file (no mocks)."""

import html
import time

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_keras.training import runner

from fer_keras.core import runs
from fer_keras.training import tracking

from fer_keras.training import parts
from fer_keras.training.config import resolve_config
from fer_keras.constants import CLASS_NAMES, NUM_CLASSES
from fer_keras.data.ferdata import FERData
from fer_keras.evaluation.evaluate import evaluate_model
from fer_keras.models import build_model
from fer_keras.models.common import image_input, logits
from wandb_offline import logged_file, read_offline_run, read_table


def _tiny_model():
    inputs, x = image_input()
    model = keras.Model(inputs, logits(keras.layers.GlobalAveragePooling2D()(x)))
    model.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def _conv_model():
    inputs, x = image_input()
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    return keras.Model(inputs, logits(keras.layers.GlobalAveragePooling2D()(x)), name="tiny_conv")


def _split(n, seed, usage=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    return FERData(images=rng.integers(0, 256, (n, 48, 48, 1), dtype=np.uint8), labels=labels,
                   usage=None if usage is None else np.full(n, usage), path="synthetic")


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
    assert logged["id"] == (run_dir / runs.WANDB_ID_FILE).read_text().strip()
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
        assert row["epoch/train_val_gap"] == pytest.approx(row["epoch/accuracy"] - row["epoch/val_accuracy"])
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


@pytest.mark.parametrize("name", ["tiny_conv", "mlp"])
def test_model_summary_samples_and_grad_cam_are_logged(name, tmp_path, capsys):
    """No test split here: the samples come from val (PublicTest); bf16 for the conv model."""
    if name == "tiny_conv":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = _conv_model() if name == "tiny_conv" else build_model(name)
    splits = {"train": _split(16, 0, "Training"), "val": _split(60, 1, "PublicTest")}
    run = tracking.start_run(CFG, tmp_path / "views")
    tracking.log_trained_model(run, model, splits)
    tracking.finish(run)
    assert capsys.readouterr().err == ""  # no guarded call failed

    logged = read_offline_run(tmp_path / "views")
    summary = logged["summary"]
    assert summary["params"] == summary["trainable_params"] == model.count_params()
    text = html.unescape(logged_file(logged, summary["model_summary"]["path"]).read_text())
    assert f'Model: "{model.name}"' in text and "Total params" in text

    assert summary["samples_from"] == "PublicTest"
    rows = read_table(logged, summary["samples"])
    assert len(rows) == tracking.SAMPLE_FACES
    assert list(rows[0]) == ["image", "true", "predicted", "confidence", "correct"]
    assert len({row["true"] for row in rows[:NUM_CLASSES]}) == NUM_CLASSES  # classes in turn
    for row in rows:
        assert Image.open(row["image"]).size == (48, 48)
        assert row["true"] in CLASS_NAMES and row["predicted"] in CLASS_NAMES
        assert 1 / NUM_CLASSES <= row["confidence"] <= 1
        assert row["correct"] == (row["true"] == row["predicted"])

    if name == "mlp":  # no convolutional feature map: no Grad-CAM, no warning
        assert "grad_cam" not in summary
        return
    grad_cam = summary["grad_cam"]
    assert grad_cam["count"] == tracking.GRAD_CAM_FACES
    for row, caption in zip(rows, grad_cam["captions"]):  # true / predicted by the float32 twin
        assert caption.startswith(f"{row['true']} / ") and caption.split(" / ")[1] in CLASS_NAMES
    for path in grad_cam["filenames"]:
        assert Image.open(logged_file(logged, path)).size == (48, 48)


def test_showcase_faces_prefer_public_test_and_take_classes_in_turn():
    usage = {"train": _split(30, 0, "Training"), "val": _split(40, 1, "PublicTest"),
             "test": _split(40, 2, "PrivateTest")}
    faces, source = tracking.showcase_faces(usage, 10)
    assert source == "PublicTest" and len(faces) == 10
    np.testing.assert_array_equal(faces.images, tracking.showcase_faces(usage, 10)[0].images)  # seeded
    assert sorted(faces.labels[:NUM_CLASSES]) == list(range(NUM_CLASSES))

    test = _split(40, 2, "PrivateTest")
    test.usage[:5] = "PublicTest"  # a stratified split: val carved from Training, PublicTest in test
    stratified = {"train": usage["train"], "val": _split(10, 1, "Training"), "test": test}
    faces, source = tracking.showcase_faces(stratified, 10)
    assert source == "PublicTest" and len(faces) == 5 and set(faces.usage) == {"PublicTest"}
    assert tracking.showcase_faces({"train": _split(8, 0), "val": _split(8, 1), "test": _split(8, 2)}, 4)[1] == "test"
    assert tracking.showcase_faces({"train": _split(8, 0), "val": _split(8, 1)}, 4)[1] == "val"


def test_comparison_is_logged_as_a_table(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_DIR")  # the comparison's W&B run lands in its folder
    out = tmp_path / "study" / "series" / "comparison"
    out.mkdir(parents=True)
    table = pd.DataFrame({"run": ["slow", "fast"], "model": ["tiny_cnn", "tiny_cnn"], "params": [100, 100],
                          "val_accuracy": [0.25, 0.5], "test_accuracy": [0.2, None], "learning_rate": [1e-3, 3e-3]})
    table.to_csv(out / "comparison.csv", index=False)
    Image.new("RGB", (20, 10)).save(out / "curves.png")
    tracking.log_comparison(out, study="study", series="series", mode="auto")

    logged = read_offline_run(out)
    assert (logged["group"], logged["name"], logged["job_type"]) == ("study", "study/series comparison", "compare")
    rows = read_table(logged, logged["summary"]["comparison"])
    assert [row["run"] for row in rows] == ["slow", "fast"]
    assert rows[0] == {"run": "slow", "model": "tiny_cnn", "params": 100, "val_accuracy": 0.25,
                       "test_accuracy": 0.2, "learning_rate": 1e-3}
    assert Image.open(logged_file(logged, logged["summary"]["curves"]["path"])).size == (20, 10)
    assert "per_class" not in logged["summary"]  # not written: not logged


@pytest.mark.slow
def test_training_run_logs_its_views(tmp_path):
    """run_training's record: bf16 model, per-epoch gap, summary, samples and Grad-CAM in the W&B run."""
    cfg = resolve_config({"model": "tiny_cnn", "limit": 300, "epochs": 1, "batch_size": 32, "wandb": "auto",
                          "export": False, "precision": "mixed_bfloat16", "out": str(tmp_path / "run")})
    runner.run_training(cfg, tmp_path / "run", verbose=0)
    logged = read_offline_run(tmp_path / "run")
    epochs = [row for row in logged["history"] if "epoch/train_val_gap" in row]
    assert len(epochs) == 1
    assert {"model_summary", "samples", "grad_cam", "params"} <= logged["summary"].keys()
    public_test = parts.load_splits(cfg)["val"]  # usage split: val is PublicTest (29 faces here)
    assert logged["summary"]["samples_from"] == "PublicTest"
    assert len(read_table(logged, logged["summary"]["samples"])) == min(len(public_test), tracking.SAMPLE_FACES)


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
    tracking.log_trained_model(run, _tiny_model(), {"val": _split(8, 0)})
    tracking.log_comparison(tmp_path / "missing", study="s", mode="disabled")
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
