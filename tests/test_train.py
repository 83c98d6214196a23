"""Training runs through fer_keras.training.train and the one orchestrator (fer_keras.training.runner): full runs on
synthetic and real data, what each option changes, resume after a kill, NaN stop, one process per
run folder, runs that fail early, and tf.distribute strategies. Option and config tests are in
test_config.py."""

import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from fer_keras.training import parts
from fer_keras.core.runs import SAVEDMODEL_DIR, read_history
from fer_keras.data.augment import Augmentation, Augmented, network_of
from fer_keras.training.callbacks import training_callbacks
from fer_keras.training.config import resolve_config
from fer_keras.constants import NUM_CLASSES
from fer_keras.data import default_data, load_fer2013
from fer_keras.errors import FerError
from fer_keras.training.losses import build_loss
from fer_keras.modelio.saving import load_keras_model, load_savedmodel
from fer_keras.training.runner import run_training
from fer_keras.training.train import main, train
from wandb_offline import read_offline_run

# Small and fast: every training test runs on a few hundred synthetic faces.
QUICK = {"model": "tiny_cnn", "limit": 400, "epochs": 1, "batch_size": 32, "wandb": "disabled",
         "export": False}
QUICK_ARGS = ["--model", "tiny_cnn", "--limit", "400", "--epochs", "1", "--batch-size", "32", "--wandb", "disabled",
              "--no-export"]


def quick_cfg(tmp_path, **overrides):
    return resolve_config({**QUICK, "out": str(tmp_path / "run"), **overrides})


def cli(*args):
    return [sys.executable, "-m", "fer_keras.train", *args]


# --- training runs ------------------------------------------------------------------------------


def png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_end_to_end_on_synthetic_data(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_DIR")  # W&B offline run must land under the run folder
    cfg = quick_cfg(tmp_path, limit=1500, epochs=5, learning_rate=0.01, schedule="cosine", warmup_epochs=0.5,
                    wandb="auto", export=True, tags=["e2e"])
    out = Path(cfg["out"])
    result = train(cfg, verbose=0)
    assert result["val"]["accuracy"] > 0.4  # learned: chance is 1/7, the majority class about 0.25

    assert json.loads((out / "config.json").read_text()) == cfg
    fields, rows = read_history(out)
    assert [int(r["epoch"]) for r in rows] == list(range(5))
    assert {"loss", "accuracy", "f1_score", "val_accuracy", "val_f1_score", "learning_rate"} <= set(fields)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {k: v for k, v in result.items() if k != "run_dir"}
    for split in ("train", "val", "test"):
        section = metrics[split]
        assert {"accuracy", "loss", "macro_f1", "confusion_matrix", "per_class"} <= set(section)
        assert np.sum(section["confusion_matrix"]) == section["n"] > 0
    assert metrics["epochs"] == 5 and metrics["wall_time"] > 0
    speed = metrics["speed"]  # the fast path training picked by itself, and what it achieved
    assert speed["backend"] == "tensorflow" and speed["jit_compile"] is False
    assert speed["images_per_second"] > 0
    gap = metrics["train"]["accuracy"] - metrics["val"]["accuracy"]
    assert metrics["train_val_gap"] == pytest.approx(gap)

    # The checkpoint is the best epoch and reproduces the validation accuracy.
    model = load_keras_model(out / "model.keras")
    assert metrics["params"] == model.count_params()
    val = parts.load_splits(cfg)["val"]
    accuracy = float(np.mean(model.predict(val.images, verbose=0).argmax(1) == val.labels))
    assert accuracy == pytest.approx(metrics["val"]["accuracy"])
    assert accuracy == pytest.approx(max(float(r["val_accuracy"]) for r in rows), abs=1e-6)

    for name in ("history", "confusion_matrix_train", "confusion_matrix_val", "confusion_matrix_test"):
        assert png(out / "plots" / f"{name}.png"), name
    assert (out / "savedmodel" / "saved_model.pb").exists()
    assert not (out / "backup").exists()

    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    wandb_run = read_offline_run(out)
    assert wandb_run["config"]["model"] == "tiny_cnn" and "e2e" in wandb_run["tags"]
    logged = [h["epoch/val_accuracy"] for h in wandb_run["history"] if "epoch/val_accuracy" in h]
    assert logged == pytest.approx([float(r["val_accuracy"]) for r in rows])
    assert wandb_run["summary"]["val/accuracy"] == pytest.approx(metrics["val"]["accuracy"])

    capsys.readouterr()
    again = train(cfg, verbose=0)  # a finished run is reported, not retrained
    assert "already complete" in capsys.readouterr().out
    assert again["val"] == metrics["val"]
    with pytest.raises(FerError, match=r"holds a run with other settings \(learning_rate: 0.01 -> 0.02\)"):
        train({**cfg, "learning_rate": 0.02}, verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {"class_weight": "balanced", "loss": "focal", "focal_alpha": 0.5, "precision": "mixed_bfloat16",
         "schedule": "cosine_restarts", "restart_epochs": 1, "warmup_epochs": 0.5, "optimizer": "adamw",
         "weight_decay": 1e-4},
        {"sampling": "balanced", "augment": "strong", "mixup": 0.2, "schedule": "plateau", "warmup_epochs": 1,
         "optimizer": "sgd", "nesterov": True, "clipnorm": 1.0, "early_stopping": 1, "epochs": 2},
    ],
    ids=["class_weight-focal-bf16", "balanced_sampling-mixup-plateau"],
)
def test_training_options_run(tmp_path, overrides):
    cfg = quick_cfg(tmp_path, **overrides)
    metrics = train(cfg, verbose=0)
    _, rows = read_history(Path(cfg["out"]))
    assert len(rows) == metrics["epochs"] >= 1
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    model = load_keras_model(Path(cfg["out"]) / "model.keras")
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.dtype_policy.name == cfg["precision"]
    assert model.output.dtype == "float32"


class KeepModel(keras.callbacks.Callback):
    """Keeps the model that `fit` trained."""

    def on_train_end(self, logs=None):
        self.trained = self.model


@pytest.mark.slow
def test_augmentation_runs_in_the_training_step_and_stays_out_of_what_is_saved(tmp_path):
    """`fit` trains the network behind the preset's Augmentation; the checkpoint and the SavedModel hold the
    network alone (no random layer) and give the trained network's outputs, the same on every call."""
    cfg = quick_cfg(tmp_path, augment="strong", export=True)
    kept = KeepModel()
    run_training(cfg, cfg["out"], callbacks=[kept], verbose=0)
    assert isinstance(kept.trained, Augmented) and isinstance(kept.trained.augmentation, Augmentation)
    saved = load_keras_model(cfg["out"])
    layers = [type(layer).__name__ for layer in saved._flatten_layers()]
    assert not [name for name in layers if name.startswith("Random") or name in ("Augmentation", "Augmented")]
    faces = load_fer2013(default_data()).images[:32].astype(np.float32)
    trained = tf.nn.softmax(network_of(kept.trained)(faces, training=False)).numpy()
    for probabilities in (tf.nn.softmax(saved(faces, training=False)).numpy(),
                          load_savedmodel(Path(cfg["out"]) / SAVEDMODEL_DIR)(image=tf.constant(faces))["probabilities"].numpy(),
                          tf.nn.softmax(kept.trained.predict(faces, verbose=0)).numpy()):
        np.testing.assert_allclose(probabilities, trained, atol=1e-6)


def first_epoch(tmp_path, name, **overrides):
    """The history row of a one-epoch tiny run of QUICK with `overrides` (augmentation off)."""
    cfg = quick_cfg(tmp_path / name, augment="none", learning_rate=3e-3, **overrides)
    train(cfg, verbose=0)
    return read_history(Path(cfg["out"]))[1][0]


@pytest.mark.slow
def test_training_options_change_what_is_trained(tmp_path):
    """Each option reaches fit: the same run with it differs from the run without it as it must."""
    base = first_epoch(tmp_path, "base")
    assert float(base["learning_rate"]) == pytest.approx(3e-3)
    # Warm-up over 2 of the run's 2 epochs: after the first, half the peak rate.
    warm = first_epoch(tmp_path, "warm", epochs=2, warmup_epochs=2, schedule="constant")
    assert float(warm["learning_rate"]) == pytest.approx(1.5e-3, rel=0.02)
    # Class weights: the training loss is a weighted mean, so it moves; the labels' accuracy less so.
    weighted = first_epoch(tmp_path, "weighted", class_weight="balanced")
    assert abs(float(weighted["loss"]) - float(base["loss"])) > 0.01
    # Focal alpha scales the focal loss (Adam's steps hardly change): half the loss of alpha 1.
    focal = first_epoch(tmp_path, "focal", loss="focal")
    half = first_epoch(tmp_path, "focal_half", loss="focal", focal_alpha=0.5)
    assert float(half["loss"]) / float(focal["loss"]) == pytest.approx(0.5, rel=0.1)
    # MixUp: the run's training batches carry soft labels.
    cfg = quick_cfg(tmp_path, mixup=1.0)
    _, labels = next(iter(parts.make_datasets(cfg, parts.load_splits(cfg))[0]))
    assert labels.numpy().max(axis=1).mean() < 0.9 and labels.numpy().sum(axis=1) == pytest.approx(1.0)


@pytest.mark.slow
def test_a_seed_reproduces_its_run(tmp_path):
    """Two fresh runs of one config (balanced sampling, on-device augmentation) write the same history, so a
    study's spread over seeds is the seeds' alone; another seed gives another run."""
    def history(name, seed):
        cfg = quick_cfg(tmp_path / name, epochs=2, sampling="balanced", augment="strong", seed=seed)
        train(cfg, verbose=0)
        return [{k: v for k, v in row.items() if k != "epoch_time"} for row in read_history(Path(cfg["out"]))[1]]

    first = history("first", 0)
    assert history("again", 0) == first
    assert history("other", 1) != first


def test_weight_averaging_validates_and_saves_the_averaged_weights(tmp_path):
    cfg = quick_cfg(tmp_path, epochs=2, ema=0.9, learning_rate=0.01)
    train(cfg, verbose=0)
    _, rows = read_history(Path(cfg["out"]))
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    # The checkpoint holds the averaged weights that validation scored, not the training weights.
    val = parts.load_splits(cfg)["val"]
    logits = load_keras_model(Path(cfg["out"]) / "model.keras").predict(val.images, verbose=0)
    assert float(np.mean(logits.argmax(1) == val.labels)) == pytest.approx(float(best["val_accuracy"]), abs=1e-6)
    loss = build_loss(cfg)(keras.ops.one_hot(val.labels, NUM_CLASSES), logits)
    assert float(loss) == pytest.approx(float(best["val_loss"]), rel=1e-4)


def test_class_weights_go_to_fit(tmp_path):
    cfg = quick_cfg(tmp_path, class_weight="balanced")
    splits = parts.load_splits(cfg)
    train_ds, _, fit_kwargs = parts.make_datasets(cfg, splits)
    from fer_keras.data import class_weights

    assert fit_kwargs["class_weight"] == class_weights(splits["train"].labels)
    assert len(next(iter(train_ds))) == 2  # (images, labels): Keras adds the sample weights
    assert parts.make_datasets(quick_cfg(tmp_path), splits)[2]["class_weight"] is None
    steps = parts.steps_per_epoch(cfg, splits)
    assert int(train_ds.cardinality()) == steps == int(np.ceil(len(splits["train"]) / 32))


def test_nan_loss_stops_with_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--model", "tiny_cnn", "--limit", "200", "--epochs", "2", "--wandb", "disabled", "--no-export",
            "--optimizer", "sgd", "--learning-rate", "1e12", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: training stopped: the loss became NaN or infinite in epoch 1" in err
    assert "(learning_rate 1e+12 may be too high)" in err
    assert "no epoch finished before it" in err
    assert not (out / "backup").exists() and not (out / "metrics.json").exists()
    # Nothing finished, so nothing to protect: the corrected command trains in the same folder.
    assert main([*args[:-4], "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["learning_rate"] == 1e-3


def _error_line(capsys, argv):
    """Run fer_keras.training.train; assert exit 2 with one `error:` line and return it."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_bad_data_does_not_lock_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    err = _error_line(capsys, [*QUICK_ARGS, "--data", str(tmp_path / "missing.csv"), "--out", str(out)])
    assert "missing.csv" in err
    assert main([*QUICK_ARGS, "--out", str(out)]) == 0


def test_out_that_is_or_is_under_a_file_is_one_error_line(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    for out in (file, file / "run"):
        assert str(file) in _error_line(capsys, [*QUICK_ARGS, "--out", str(out)])
    assert file.read_text() == "keep me"


def test_a_complete_run_stays_complete(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*QUICK_ARGS, "--out", str(out)]) == 0
    record = {p.name: p.read_bytes() for p in (out / "metrics.json", out / "model.keras", out / "history.csv")}
    (out / "backup").mkdir()  # as a kill during the final clean-up leaves it
    capsys.readouterr()
    assert main([*QUICK_ARGS, "--out", str(out)]) == 0
    assert "already complete" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (out / "metrics.json", out / "model.keras", out / "history.csv")} == record
    assert not (out / "backup").exists()


def _start_and_wait_for_first_epoch(args, history, **popen):
    """A `fer_keras.training.train` process past its first epoch (its history row written)."""
    proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, **popen)
    deadline = time.time() + 240
    while not read_history(history.parent)[1] and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the test could act on it"
    return proc


@pytest.mark.slow
def test_one_process_per_run_folder_and_no_stale_lock(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--model", "tiny_cnn", "--limit", "2000", "--epochs", "50", "--wandb", "disabled", "--no-export",
            "--out", str(out)]
    first = _start_and_wait_for_first_epoch(args, out / "history.csv", stderr=subprocess.DEVNULL)
    try:
        err = _error_line(capsys, args)
        assert f"{out} is in use by another training run (process {first.pid})" in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    from fer_keras.core.lock import folder_lock

    with folder_lock(out):  # the killed process left no lock behind
        pass
    assert not (out / "metrics.json").exists()


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    args = ["--model", "tiny_cnn", "--limit", "2000", "--epochs", "50", "--wandb", "disabled", "--no-export",
            "--out", str(out)]
    proc = _start_and_wait_for_first_epoch(args, out / "history.csv", stderr=subprocess.PIPE, text=True)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "interrupted: run the same command again to resume from the last finished epoch")
    assert (out / "backup").is_dir() and not (out / "metrics.json").exists()


@pytest.mark.slow
def test_a_ctrl_c_whose_interrupt_python_drops_still_stops_training(tmp_path, capsys, monkeypatch):
    # CI: Ctrl-C landed in jaxlib's garbage-collector callback, Python dropped its KeyboardInterrupt
    # ("Exception ignored in: <function _xla_gc_callback>") and training ran on to the end with status 0.
    out = tmp_path / "run"
    sent, dropped = [], []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))

    def ctrl_c_inside_a_gc_callback(phase, info):
        if not sent and (out / "history.csv").exists() and read_history(out)[1]:
            sent.append(phase)
            os.kill(os.getpid(), signal.SIGINT)  # its KeyboardInterrupt is raised here, where gc drops it

    gc.callbacks.append(ctrl_c_inside_a_gc_callback)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["--model", "tiny_cnn", "--limit", "2000", "--epochs", "50", "--wandb", "disabled", "--no-export",
                  "--out", str(out)])
    finally:
        gc.callbacks.remove(ctrl_c_inside_a_gc_callback)
    assert sent and dropped == [KeyboardInterrupt] and exit_info.value.code == 130
    assert capsys.readouterr().err.splitlines()[-1].startswith("interrupted: run the same command again")
    assert len(read_history(out)[1]) < 50 and (out / "backup").is_dir()


def test_fer2013_csv_selects_the_data_when_no_data_is_given(tmp_path, monkeypatch, capsys):
    from fer_keras.data.synthetic import write_synthetic_csv

    data = write_synthetic_csv(tmp_path / "mine.csv", n=500, seed=3)
    monkeypatch.setenv("FER2013_CSV", str(data))
    out = tmp_path / "run"
    assert main([*QUICK_ARGS, "--out", str(out)]) == 0
    assert f"data: {data}\n" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["data"] == str(data)


def test_nan_epoch_keeps_last_good_checkpoint(tmp_path):
    cfg = quick_cfg(tmp_path, epochs=2)
    out = Path(cfg["out"])
    splits = parts.load_splits(cfg)
    train_ds, val_ds, _ = parts.make_datasets(cfg, splits)
    model, _ = parts.build_compiled_model(cfg, parts.steps_per_epoch(cfg, splits))
    fit = {"validation_data": val_ds, "shuffle": False, "verbose": 0}
    model.fit(train_ds, epochs=1, callbacks=training_callbacks(cfg, out), **fit)
    good = (out / "model.keras").read_bytes()
    nan_labels = tf.data.Dataset.from_tensors(
        (tf.zeros((8, 48, 48, 1)), tf.fill((8, NUM_CLASSES), float("nan")))
    )
    history = model.fit(nan_labels, epochs=2, callbacks=training_callbacks(cfg, out), **fit)
    assert history.epoch == [1]  # resumed from the backup after epoch 1
    assert np.isnan(history.history["loss"][-1])
    assert (out / "model.keras").read_bytes() == good
    _, rows = read_history(out)
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[1]["loss"] == "nan"


def test_overfit_check_reaches_full_training_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--overfit-check", "24", "--model", "tiny_cnn", "--epochs", "15", "--batch-size", "24",
                 "--learning-rate", "0.01", "--wandb", "disabled", "--no-export", "--augment", "strong",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    check = metrics["overfit_check"]
    assert {k: check[k] for k in ("samples", "train_accuracy", "reached_100")} == {
        "samples": 24, "train_accuracy": 1.0, "reached_100": True}
    history = (out / "history.csv").read_text().splitlines()
    accuracy = [float(line.split(",")[history[0].split(",").index("accuracy")]) for line in history[1:]]
    assert check["first_epoch_at_100_in_training"] == accuracy.index(1.0) + 1
    assert code == 0 and f"reached 100% (100% in training mode from epoch {accuracy.index(1.0) + 1})" in printed
    assert json.loads((out / "config.json").read_text())["augment"] == "none"


@pytest.mark.slow
def test_resume_after_kill_continues_at_next_epoch(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--model", "tiny_cnn", "--limit", "1000", "--epochs", "6", "--batch-size", "16",
            "--wandb", "disabled", "--no-export", "--out", str(out)]
    history = out / "history.csv"
    proc = subprocess.Popen(
        cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while not read_history(history.parent)[1] and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # let the backup of that epoch land too; the run is now in a later epoch
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_history(history.parent)[1]
    resume_at = json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"]
    assert 1 <= resume_at < 6 and len(before) >= resume_at

    capsys.readouterr()
    assert main(args) == 0  # the same command again
    first_epoch = re.search(r"^Epoch (\d+)/6", capsys.readouterr().out, re.MULTILINE)
    assert first_epoch and int(first_epoch.group(1)) == resume_at + 1
    after = read_history(history.parent)[1]
    assert [int(r["epoch"]) for r in after] == list(range(6))
    assert after[:resume_at] == before[:resume_at]  # epochs done before the kill were not redone
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 6
    assert not (out / "backup").exists()


@pytest.mark.slow
def test_real_fer2013_slice(tmp_path, real_fer2013):
    cfg = quick_cfg(tmp_path, data=str(real_fer2013), limit=1000, epochs=2, learning_rate=3e-3)
    metrics = train(cfg, verbose=0)
    # Usage decides the split: PublicTest is 3,589 of 32,298 rows, and there is no PrivateTest.
    assert set(metrics) >= {"train", "val"} and "test" not in metrics
    assert metrics["val"]["n"] == pytest.approx(1000 * 3589 / 32298, abs=2)
    assert metrics["train"]["n"] + metrics["val"]["n"] == 1000
    assert metrics["val"]["accuracy"] > 0.2 and np.isfinite(metrics["val"]["loss"])


# --- tf.distribute ------------------------------------------------------------------------------


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    out = tmp_path / "run"
    args = cli("--strategy", "mirrored", "--model", "tiny_cnn", "--limit", "600", "--epochs", "1",
               "--batch-size", "32", "--wandb", "disabled", "--no-export", "--out", str(out))
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "strategy: mirrored (MirroredStrategy) with 2 replicas\n" in proc.stdout
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "strategy 'multi_worker' needs TF_CONFIG to describe the cluster"),
        ("{cluster", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG has no 'cluster'"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}',
         r"TF_CONFIG 'task' must name a task type of its cluster \(worker\)"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
         "TF_CONFIG task index 1 is not one of the 1 'worker' addresses"),
        # A valid cluster, but this process started TensorFlow long ago (collectives are set at startup).
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}',
         "must be created before any TensorFlow work"),
    ],
)
def test_multi_worker_refuses_a_bad_cluster_with_one_line(tmp_path, capsys, monkeypatch, tf_config, message):
    tf.config.list_logical_devices("CPU")  # TensorFlow has started in this process, whatever ran before
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["--strategy", "multi_worker", "--wandb", "disabled", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def run_cluster(args, ports, logs, timeout=240, kill_when=None):
    """Run `args` as every worker of a cluster on 127.0.0.1 (one per port, output to files in
    `logs`); return each worker's (returncode, output). With `kill_when`, SIGKILL every worker
    once it returns true."""
    load_fer2013(default_data())  # decode cache ready before the workers read it
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    paths = [logs / f"worker-{i}-{ports[0]}.log" for i in range(len(ports))]
    procs = []
    for i, path in enumerate(paths):
        with open(path, "w") as log:
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            procs.append(subprocess.Popen(args, env={**os.environ, "TF_CONFIG": tf_config},
                                          stdout=log, stderr=subprocess.STDOUT))
    deadline = time.time() + timeout
    try:
        while kill_when is not None and time.time() < deadline:
            ended = [path for p, path in zip(procs, paths) if p.poll() is not None]
            assert not ended, f"a worker ended before the cluster was killed: {ended[0].read_text()[-3000:]}"
            if kill_when():
                for p in procs:
                    p.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(1, deadline - time.time())))
            except subprocess.TimeoutExpired:
                codes.append(None)  # hung: killed below
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(code, path.read_text()) for code, path in zip(codes, paths)]


@pytest.mark.slow
def test_multi_worker_training_with_two_workers_resumes_after_a_kill(tmp_path, free_ports):
    out, worker = tmp_path / "run", tmp_path / "run" / "worker-1"
    args = cli("--strategy", "multi_worker", "--model", "tiny_cnn", "--limit", "1000", "--epochs", "4",
               "--batch-size", "16", "--wandb", "offline", "--out", str(out))

    # Kill the whole cluster in its second epoch, then run the same commands again.
    def both_did_an_epoch():
        if all(read_history(d)[1] for d in (out, worker)):
            time.sleep(0.5)  # both backups land before the next epoch's first all-reduce
            return True
        return False

    run_cluster(args, free_ports(2), tmp_path, kill_when=both_did_an_epoch)
    resume_at = json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"]
    assert 1 <= resume_at < 4

    # Without worker 1's backup the workers disagree on where to resume: both stop, and say why.
    (worker / "backup").rename(tmp_path / "kept")
    for code, log in run_cluster(args, free_ports(2), tmp_path):
        assert code == 2, log[-3000:]
        assert f"error: the workers would resume from different epochs (worker 0: epoch {resume_at + 1}, " \
               "worker 1: epoch 1)" in log
    (tmp_path / "kept").rename(worker / "backup")
    (chief_rc, chief_log), (worker_rc, worker_log) = run_cluster(args, free_ports(2), tmp_path)
    assert chief_rc == 0, chief_log[-3000:]
    assert worker_rc == 0, worker_log[-3000:]
    assert "with 2 replicas; this process is worker-0 (chief)" in chief_log
    assert "this process is worker-1\n" in worker_log
    for log in (chief_log, worker_log):
        assert re.search(r"^Epoch (\d+)/4", log, re.MULTILINE).group(1) == str(resume_at + 1)

    # The chief owns the run folder (W&B, export); worker 1 keeps its own inside it.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and (out / "savedmodel" / "saved_model.pb").exists()
    assert (worker / "metrics.json").exists()
    assert not (worker / "savedmodel").exists() and not (worker / "wandb").exists()
    assert json.loads((worker / "config.json").read_text())["wandb"] == "disabled"

    # One synchronous training: the same metrics every epoch, and the same final weights.
    chief_rows, worker_rows = read_history(out)[1], read_history(worker)[1]
    assert [int(r["epoch"]) for r in chief_rows] == list(range(4))
    for key in ("loss", "accuracy", "val_accuracy"):
        assert [r[key] for r in chief_rows] == [r[key] for r in worker_rows], key
    for a, b in zip(load_keras_model(out / "model.keras").get_weights(),
                    load_keras_model(worker / "model.keras").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert float(chief_rows[-1]["loss"]) < float(chief_rows[0]["loss"])

    # W&B (the chief's run, resumed): the epochs after the kill, as in history.csv.
    logged = [h["epoch/loss"] for h in read_offline_run(out)["history"] if "epoch/loss" in h]
    assert logged[-(4 - resume_at):] == pytest.approx([float(r["loss"]) for r in chief_rows[resume_at:]])


# Keras `fit` under MultiWorkerMirroredStrategy without fer_keras.training.multi_worker's fix. If this ever
# prints MULTI_WORKER_FIT_OK, Keras has fixed keras-team/keras#20585: drop the fix.
UNFIXED_MULTI_WORKER_SCRIPT = """
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
from fer_keras.training import parts
from fer_keras.training.config import resolve_config
cfg = resolve_config({"model": "tiny_cnn", "limit": 128, "epochs": 1, "batch_size": 32})
splits = parts.load_splits(cfg)
train_ds, val_ds, fit_kwargs = parts.make_datasets(cfg, splits)
with strategy.scope():
    model, _ = parts.build_compiled_model(cfg, parts.steps_per_epoch(cfg, splits))
model.fit(train_ds, validation_data=val_ds, verbose=0, **fit_kwargs)
print("MULTI_WORKER_FIT_OK")
"""


@pytest.mark.slow
def test_keras_fit_still_needs_the_multi_worker_fix(tmp_path, free_ports):
    script = [sys.executable, "-c", UNFIXED_MULTI_WORKER_SCRIPT]
    outputs = [log for _, log in run_cluster(script, free_ports(2), tmp_path, timeout=180)]
    assert not any("MULTI_WORKER_FIT_OK" in out for out in outputs), "Keras fixed multi-worker fit: drop the fix"
    assert any("Attempt to convert a value (PerReplica" in out for out in outputs), outputs[0][-3000:]


@pytest.mark.slow
def test_cross_validation_trains_each_fold_and_reports_the_spread(tmp_path, capsys):
    out = tmp_path / "cv"
    args = [*QUICK_ARGS, "--limit", "600", "--folds", "3", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "cross_validation.json").read_text())
    folds = [json.loads((out / f"fold-{i}" / "metrics.json").read_text()) for i in range(3)]
    accuracies = [f["val"]["accuracy"] for f in folds]
    assert summary["val"]["accuracy"]["values"] == accuracies
    assert summary["val"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert summary["val"]["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert "test" in summary  # the synthetic set's held-out rows
    configs = [json.loads((out / f"fold-{i}" / "config.json").read_text()) for i in range(3)]
    assert [c["fold"] for c in configs] == [0, 1, 2] and {c["group"] for c in configs} == {"cv"}
    assert "3-fold val: accuracy" in capsys.readouterr().out
    assert main(args) == 0  # every fold complete: nothing trains again
    assert capsys.readouterr().out.count("already complete") == 3
