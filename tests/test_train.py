"""Training: config resolution, optimizer/schedule/loss factories, full runs on synthetic and real
data, resume after a kill, NaN stop, tf.distribute strategies."""

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
import yaml

from fer_keras import config as config_lib
from fer_keras import training
from fer_keras.callbacks import read_history, training_callbacks
from fer_keras.config import coerce, load_recipe, parse_assignments, resolve_config
from fer_keras.constants import NUM_CLASSES
from fer_keras.data import default_data, load_fer2013
from fer_keras.errors import FerError
from fer_keras.saving import load_keras_model
from fer_keras.losses import build_loss
from fer_keras.models import default_hparams
from fer_keras.optim import OPTIMIZERS, LinearWarmup, build_optimizer, learning_rate, schedule_callbacks
from fer_keras.wandb_offline import read_offline_run
from fer_keras.train import main, overfit_config, parse_args, train

# Small and fast: every training test runs on a few hundred synthetic faces.
QUICK = {"model": "tiny_cnn", "limit": 400, "epochs": 1, "batch_size": 32, "wandb": "disabled",
         "export": False}


def quick_cfg(tmp_path, **overrides):
    return resolve_config({**QUICK, "out": str(tmp_path / "run"), **overrides})


def cli(*args):
    return [sys.executable, "-m", "fer_keras.train", *args]


# --- config -------------------------------------------------------------------------------------


def test_resolution_order_defaults_recipe_file_flags(tmp_path):
    recipe = load_recipe("resnet_fer")
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text(yaml.safe_dump({
        "recipe": "resnet_fer", "schedule": "cosine", "learning_rate": 0.01, "model_args": {"dropout": 0.1},
    }))
    overrides, path = parse_args(
        ["--config", str(config_file), "--learning-rate", "2e-2", "--set", "depth=1"]
    )
    cfg = resolve_config(overrides, path)
    assert cfg["recipe"] == "resnet_fer"
    # recipe over defaults
    assert cfg["early_stopping"] == recipe["early_stopping"] != config_lib.DEFAULTS["early_stopping"]
    assert cfg["schedule"] == "cosine" != recipe["schedule"]  # file over recipe
    assert cfg["learning_rate"] == 0.02  # flag over file
    assert cfg["model_args"] == {"dropout": 0.1, "depth": 1}  # merged across layers
    assert cfg["momentum"] == config_lib.DEFAULTS["momentum"]
    # A later layer switching the model drops the builder arguments meant for the previous one.
    assert resolve_config({"recipe": "resnet_fer", "model": "tiny_cnn"}, config_file)["model_args"] == {}


def test_flags_are_coerced_to_config_types():
    overrides, _ = parse_args([
        "--set", "dropout=0.3", "widths=[16, 32]", "--learning-rate", "1e-3", "--epochs", "3",
        "--nesterov", "--clipnorm", "none", "--tags", "a", "b", "--focal-alpha", "balanced",
        "--no-export", "--warmup-epochs", "2",
    ])
    cfg = resolve_config(overrides)
    assert cfg["model_args"] == {"dropout": 0.3, "widths": [16, 32]}
    assert (cfg["learning_rate"], cfg["epochs"], cfg["nesterov"], cfg["clipnorm"]) == (0.001, 3, True, None)
    assert cfg["tags"] == ["a", "b"] and cfg["focal_alpha"] == "balanced" and cfg["export"] is False
    assert cfg["warmup_epochs"] == 2.0 and isinstance(cfg["warmup_epochs"], float)
    texts = ("7", "0.5", "true", "null", "adam", "[1, 2]")
    assert [coerce(t) for t in texts] == [7, 0.5, True, None, "adam", [1, 2]]
    with pytest.raises(FerError, match="KEY=VALUE"):
        parse_assignments(["dropout"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learnig_rate": 0.1}, "unknown config key 'learnig_rate'.*learning_rate"),
        ({"optimizer": "adamx"}, "'optimizer': expected one of adam, adamw, sgd, rmsprop, got 'adamx'"),
        ({"epochs": 1.5}, "'epochs': expected an integer"),
        ({"learning_rate": "fast"}, "'learning_rate': expected a number"),
        ({"focal_alpha": [1, 2]}, "'focal_alpha'"),
        ({"class_weight": "balanced", "sampling": "balanced"}, "one way to balance"),
        ({"recipe": "nope"}, "unknown recipe 'nope'; known recipes: .*default"),
        ({"model_args": {"widht": 3}}, "model 'simple_cnn' has no hyperparameter widht; it takes: "),
    ],
)
def test_bad_config_fails_naming_the_key(overrides, message):
    with pytest.raises(FerError, match=message):
        resolve_config(overrides)


def test_help_lists_every_config_key(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for key in config_lib.DEFAULTS:
        assert "--set" in text if key == "model_args" else f"--{key.replace('_', '-')}" in text, key


def test_cli_reports_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'epoch' in config file") and "epochs" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "no_such_net", "--limit", "50", "--wandb", "disabled", "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    assert "config key 'model': unknown model 'no_such_net'; known models: " in capsys.readouterr().err


def test_recipes_are_documented_and_valid():
    names = config_lib.list_recipes()
    assert "default" in names and len(names) >= 6
    for name in names:
        text = (config_lib.RECIPES_DIR / f"{name}.yaml").read_text()
        assert text.startswith("# "), name
        assert f"python -m fer_keras.train --recipe {name}" in text, name
        cfg = resolve_config({"recipe": name})
        assert set(cfg["model_args"]) <= set(default_hparams(cfg["model"])), name


def test_overfit_config_switches_regularisation_off():
    cfg = overfit_config(resolve_config({"recipe": "deep_cnn", "overfit_check": 32, "label_smoothing": 0.1}))
    assert cfg["augment"] == "none" and cfg["class_weight"] is None and cfg["label_smoothing"] == 0.0
    assert cfg["model_args"] == {"spatial_dropout": 0.0, "dropout": 0.0, "weight_decay": 0.0}


# --- optimizers, schedules, losses --------------------------------------------------------------


def lr_at(schedule, steps):
    return [float(schedule(s)) if callable(schedule) else schedule for s in steps]


@pytest.mark.parametrize(
    "schedule, expected",
    [  # steps 0, 5, 10, 20, 29 with 10 steps per epoch, 3 epochs, peak 0.1, 1 warm-up epoch
        ("constant", [0.0, 0.05, 0.1, 0.1, 0.1]),
        ("cosine", [0.0, 0.05, 0.1, 0.05, 0.1 * 0.5 * (1 + np.cos(np.pi * 19 / 20))]),
        ("cosine_restarts", [0.0, 0.05, 0.1, 0.1, 0.1 * 0.5 * (1 + np.cos(np.pi * 9 / 10))]),
    ],
)
def test_schedules_warm_up_linearly_then_follow_their_shape(schedule, expected):
    cfg = resolve_config({"schedule": schedule, "learning_rate": 0.1, "epochs": 3, "warmup_epochs": 1,
                          "restart_epochs": 1})
    assert lr_at(learning_rate(cfg, 10), [0, 5, 10, 20, 29]) == pytest.approx(expected, abs=1e-6)
    cold = resolve_config({**cfg, "warmup_epochs": 0.0})
    assert lr_at(learning_rate(cold, 10), [0])[0] == pytest.approx(0.1)


def test_warmup_schedule_serialises():
    cfg = resolve_config({"schedule": "cosine_restarts", "warmup_epochs": 1, "restart_epochs": 2})
    schedule = learning_rate(cfg, 10)
    assert isinstance(schedule, LinearWarmup)
    copy = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert lr_at(copy, [3, 17, 33]) == pytest.approx(lr_at(schedule, [3, 17, 33]))


def test_plateau_uses_callbacks_with_epoch_warmup():
    cfg = resolve_config(
        {"schedule": "plateau", "learning_rate": 0.3, "warmup_epochs": 2, "plateau_factor": 0.2}
    )
    assert learning_rate(cfg, 10) == 0.3
    warmup, plateau = schedule_callbacks(cfg)
    assert [warmup.schedule(e, 0.123) for e in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.123])
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau) and plateau.factor == 0.2
    assert schedule_callbacks(resolve_config({"schedule": "cosine"})) == []


def test_optimizers_weight_decay_spares_biases_and_clipping():
    cfg = resolve_config({"optimizer": "adamw", "weight_decay": 0.5, "learning_rate": 0.1, "clipnorm": 1.0})
    optimizer = build_optimizer(cfg, 10)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.clipnorm == 1.0
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    bias = keras.Variable(np.ones(2, "float32"), name="bias")
    optimizer.apply_gradients([(np.zeros((2, 2), "float32"), kernel), (np.zeros(2, "float32"), bias)])
    np.testing.assert_allclose(kernel.numpy(), 0.95)  # decayed by lr * weight_decay
    np.testing.assert_allclose(bias.numpy(), 1.0)
    sgd = build_optimizer(resolve_config({"optimizer": "sgd", "momentum": 0.8, "nesterov": True}), 10)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.8 and sgd.nesterov
    for name, cls in OPTIMIZERS.items():  # weight decay 0 (the default) included
        assert type(build_optimizer(resolve_config({"optimizer": name}), 10)) is cls


def test_label_smoothing_and_focal_losses_on_one_hot():
    logits = np.array([[2.0, 0.5, -1.0, 0, 0, 0, 0], [0.1, 0.2, 3.0, 0, 0, 0, 0]], "float32")
    labels = np.eye(NUM_CLASSES, dtype="float32")[[0, 2]]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    smoothed = labels * 0.9 + 0.1 / NUM_CLASSES
    ce = build_loss(resolve_config({"label_smoothing": 0.1}))
    assert float(ce(labels, logits)) == pytest.approx(-(smoothed * np.log(probs)).sum(1).mean(), rel=1e-5)

    focal = build_loss(resolve_config({"loss": "focal", "focal_gamma": 2.0}))
    expected = -(labels * (1 - probs) ** 2 * np.log(probs)).sum(1).mean()  # alpha 1, not Keras' 0.25
    assert float(focal(labels, logits)) == pytest.approx(expected, rel=1e-5)

    train_labels = np.array([0] * 30 + [2] * 5 + [1, 3, 4, 5, 6] * 4)
    balanced = build_loss(resolve_config({"loss": "focal", "focal_alpha": "balanced"}), train_labels)
    alpha = np.array(balanced.alpha)
    assert alpha[0] < 1 < alpha[2] and np.mean(alpha[train_labels]) == pytest.approx(1.0)
    per_sample = -(labels * (1 - probs) ** 2 * np.log(probs)).sum(1)
    assert float(balanced(labels, logits)) == pytest.approx((alpha[[0, 2]] * per_sample).mean(), rel=1e-5)
    with pytest.raises(FerError, match="training labels"):
        build_loss(resolve_config({"loss": "focal", "focal_alpha": "balanced"}))


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
    fields, rows = read_history(out / "history.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(5))
    assert {"loss", "accuracy", "f1_score", "val_accuracy", "val_f1_score", "learning_rate"} <= set(fields)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {k: v for k, v in result.items() if k != "run_dir"}
    for split in ("train", "val", "test"):
        section = metrics[split]
        assert {"accuracy", "loss", "macro_f1", "confusion_matrix", "per_class"} <= set(section)
        assert np.sum(section["confusion_matrix"]) == section["n"] > 0
    assert metrics["epochs"] == 5 and metrics["wall_time"] > 0
    gap = metrics["train"]["accuracy"] - metrics["val"]["accuracy"]
    assert metrics["train_val_gap"] == pytest.approx(gap)

    # The checkpoint is the best epoch and reproduces the validation accuracy.
    model = load_keras_model(out / "model.keras")
    assert metrics["params"] == model.count_params()
    val = training.load_splits(cfg)["val"]
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
    _, rows = read_history(Path(cfg["out"]) / "history.csv")
    assert len(rows) == metrics["epochs"] >= 1
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    model = load_keras_model(Path(cfg["out"]) / "model.keras")
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.dtype_policy.name == cfg["precision"]
    assert model.output.dtype == "float32"
    keras.mixed_precision.set_global_policy("float32")


def test_sample_weights_follow_class_weights(tmp_path):
    cfg = quick_cfg(tmp_path, class_weight="balanced")
    splits = training.load_splits(cfg)
    train_ds, _, fit_kwargs = training.make_datasets(cfg, splits)
    _, y, w = next(iter(train_ds))
    from fer_keras.data import class_weights

    weights = class_weights(splits["train"].labels)
    np.testing.assert_allclose(w.numpy(), [weights[c] for c in y.numpy().argmax(1)], rtol=1e-6)
    assert fit_kwargs == {"epochs": 1, "shuffle": False}
    steps = training.steps_per_epoch(cfg, splits)
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


def test_nan_epoch_keeps_last_good_checkpoint(tmp_path):
    cfg = quick_cfg(tmp_path, epochs=2)
    out = Path(cfg["out"])
    splits = training.load_splits(cfg)
    train_ds, val_ds, _ = training.make_datasets(cfg, splits)
    model = training.build_compiled_model(cfg, training.steps_per_epoch(cfg, splits))
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
    _, rows = read_history(out / "history.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[1]["loss"] == "nan"


def test_overfit_check_reaches_full_training_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--overfit-check", "24", "--model", "tiny_cnn", "--epochs", "15", "--batch-size", "24",
                 "--learning-rate", "0.01", "--wandb", "disabled", "--no-export", "--augment", "strong",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overfit_check"] == {"samples": 24, "train_accuracy": 1.0, "reached_100": True}
    assert code == 0 and "reached 100%" in printed
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
    while not read_history(history)[1] and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # let the backup of that epoch land too; the run is now in a later epoch
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_history(history)[1]
    resume_at = json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"]
    assert 1 <= resume_at < 6 and len(before) >= resume_at

    capsys.readouterr()
    assert main(args) == 0  # the same command again
    first_epoch = re.search(r"^Epoch (\d+)/6", capsys.readouterr().out, re.MULTILINE)
    assert first_epoch and int(first_epoch.group(1)) == resume_at + 1
    after = read_history(history)[1]
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
        if all(read_history(d / "history.csv")[1] for d in (out, worker)):
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
    chief_rows, worker_rows = read_history(out / "history.csv")[1], read_history(worker / "history.csv")[1]
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


# Keras `fit` under MultiWorkerMirroredStrategy without fer_keras.multi_worker's fix. If this ever
# prints MULTI_WORKER_FIT_OK, Keras has fixed keras-team/keras#20585: drop the fix.
UNFIXED_MULTI_WORKER_SCRIPT = """
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
from fer_keras import training
from fer_keras.config import resolve_config
cfg = resolve_config({"model": "tiny_cnn", "limit": 128, "epochs": 1, "batch_size": 32})
splits = training.load_splits(cfg)
train_ds, val_ds, fit_kwargs = training.make_datasets(cfg, splits)
with strategy.scope():
    model = training.build_compiled_model(cfg, training.steps_per_epoch(cfg, splits))
model.fit(train_ds, validation_data=val_ds, verbose=0, **fit_kwargs)
print("MULTI_WORKER_FIT_OK")
"""


@pytest.mark.slow
def test_keras_fit_still_needs_the_multi_worker_fix(tmp_path, free_ports):
    script = [sys.executable, "-c", UNFIXED_MULTI_WORKER_SCRIPT]
    outputs = [log for _, log in run_cluster(script, free_ports(2), tmp_path, timeout=180)]
    assert not any("MULTI_WORKER_FIT_OK" in out for out in outputs), "Keras fixed multi-worker fit: drop the fix"
    assert any("Attempt to convert a value (PerReplica" in out for out in outputs), outputs[0][-3000:]
