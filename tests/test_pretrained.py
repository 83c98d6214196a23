"""Shipped models: every model in fer_keras/pretrained loads in safe mode with its card's figures and
classifies faces; `add` ships a run's model with a card that `python -m fer_keras.pretrained` prints."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from fer_keras import pretrained
from fer_keras.data import default_data, load_fer2013, split_data
from fer_keras.errors import FerError
from fer_keras.pretrained.__main__ import main
from fer_keras.training.train import main as train_main

SHIPPED = sorted(pretrained.cards())


def test_the_default_model_is_shipped():
    assert pretrained.DEFAULT in SHIPPED
    total = sum(p.stat().st_size for p in pretrained.HERE.iterdir() if p.suffix in (".keras", ".json"))
    assert total <= 25e6


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_safely_matches_its_card_and_classifies(name):
    card = pretrained.cards()[name]
    model = pretrained.load(name)  # safe mode: a file holding code would be refused
    assert model.count_params() == card["params"]
    assert pretrained.model_path(name).stat().st_size == card["size_bytes"]
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    faces = load_fer2013(default_data()).images[:8].astype("float32")
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(model(faces, training=False)))
    assert probs.shape == (8, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert card["command"].startswith("python -m fer_keras.train") and "research use" in card["data"]


@pytest.mark.real_data
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_scores_its_card_on_publictest(name, real_fer2013):
    card = pretrained.cards()[name]
    val = split_data(load_fer2013(real_fer2013))["val"]
    logits = pretrained.load(name).predict(val.images, batch_size=512, verbose=0)
    assert np.mean(logits.argmax(axis=1) == val.labels) == pytest.approx(card["publictest"]["accuracy"], abs=2e-3)


@pytest.fixture
def package_dir(tmp_path, monkeypatch):
    """An empty stand-in for fer_keras/pretrained, so `add` never writes into the package."""
    monkeypatch.setattr(pretrained, "HERE", tmp_path / "pretrained")
    (tmp_path / "pretrained").mkdir()
    return tmp_path / "pretrained"


def test_add_ships_a_bf16_run_as_float32_with_its_card(tmp_path, package_dir, capsys, monkeypatch):
    run = tmp_path / "run"
    assert train_main(["--model", "tiny_cnn", "--limit", "400", "--epochs", "2", "--batch-size", "32", "--wandb",
                       "disabled", "--no-export", "--precision", "mixed_bfloat16", "--out", str(run)]) == 0
    keras.mixed_precision.set_global_policy("float32")
    command = "python -m fer_keras.train --model tiny_cnn --epochs 2"
    assert main(["add", str(run), "--name", "tiny", "--command", command, "--description", "a test model"]) == 0
    card = json.loads((package_dir / "tiny.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert card["publictest"]["accuracy"] == metrics["val"]["accuracy"] and card["command"] == command
    assert card["training"]["epochs"] == 2 and card["params"] == metrics["params"]
    assert card["training"]["machine"] == metrics["machine"] and "-core CPU" in card["training"]["machine"]
    assert card["shipped_by"].startswith(f"python -m fer_keras.pretrained add {run} --name tiny")
    assert 0 <= card["publictest"]["accuracy_tta"] <= 1  # the run's data (synthetic) was at hand

    shipped = pretrained.load("tiny")
    trained = keras.saving.load_model(run / "model.keras")
    faces = load_fer2013(default_data()).images[:16].astype("float32")
    np.testing.assert_allclose(shipped.predict(faces, verbose=0), trained.predict(faces, verbose=0), atol=0.05)
    capsys.readouterr()
    monkeypatch.setattr(pretrained, "DEFAULT", "tiny")
    assert main([]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("tiny (default): a test model") and command in printed and "research use" in printed


def test_missing_models_say_what_is_shipped(package_dir, capsys):
    with pytest.raises(FerError, match=r"no shipped model 'nope' .*\(shipped: none\)"):
        pretrained.load("nope")
    assert main([]) == 1 and "no shipped models" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["add", str(package_dir), "--name", "x", "--command", "c", "--description", "d"])
    assert exit_info.value.code == 2 and "is not a finished run folder" in capsys.readouterr().err


def test_predict_and_explain_use_the_shipped_model_when_no_model_is_given(tmp_path, capsys):
    from fer_keras.evaluation.explain import main as explain_main
    from fer_keras.inference.predict import main as predict_main

    photo = Path(__file__).parent / "fixtures" / "astronaut.jpg"
    assert predict_main(["--images", str(photo), "--detect-faces", "--out", str(tmp_path / "p.csv")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"no --model given: using the shipped model {pretrained.DEFAULT}")
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "file,x,y,w,h,emotion,class_name" and len(rows) == 2  # the astronaut's face
    assert explain_main(["--n", "2", "--out", str(tmp_path / "cam.png")]) == 0
    assert "using the shipped model" in capsys.readouterr().out and (tmp_path / "cam.png").exists()
