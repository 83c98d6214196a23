"""Knowledge distillation: blended targets, softened teacher probabilities, a student run trained on
its teachers' targets, and the conflicting-duplicates filter that rides along in load_splits."""

import json
from pathlib import Path

import numpy as np
import pytest

from fer_keras.training import parts
from fer_keras.training.config import resolve_config
from fer_keras.constants import NUM_CLASSES
from fer_keras.data import default_data, load_fer2013
from fer_keras.data.csvfile import write_csv
from fer_keras.training.distill import distill_targets, teacher_probabilities
from fer_keras.inference.predictor import Predictor
from fer_keras.training.train import main, train

QUICK = {"model": "tiny_cnn", "limit": 300, "epochs": 1, "batch_size": 32, "wandb": "disabled", "export": False,
         "augment": "none"}


def quick_cfg(out, **overrides):
    return resolve_config({**QUICK, "out": str(out), **overrides})


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A one-epoch tiny_cnn run on synthetic faces: the teacher of every test here."""
    cfg = quick_cfg(tmp_path_factory.mktemp("teacher") / "run", epochs=2, learning_rate=3e-3)
    train(cfg, verbose=0)
    return Path(cfg["out"])


def test_targets_blend_the_label_with_the_teachers():
    labels = np.array([0, 3, 6])
    teacher = np.full((3, NUM_CLASSES), 1 / NUM_CLASSES, np.float32)
    np.testing.assert_array_equal(distill_targets(labels, teacher, 0.0), np.eye(NUM_CLASSES)[labels])
    np.testing.assert_allclose(distill_targets(labels, teacher, 1.0), teacher)
    blended = distill_targets(labels, teacher, 0.25)
    np.testing.assert_allclose(blended, 0.75 * np.eye(NUM_CLASSES)[labels] + 0.25 / NUM_CLASSES, rtol=1e-6)
    assert blended.dtype == np.float32


def test_teacher_probabilities_are_flip_tta_and_soften_with_temperature(teacher_run):
    faces = load_fer2013(default_data()).images[:64]
    plain = teacher_probabilities([teacher_run], faces)
    expected = Predictor.load(teacher_run, tta=True).predict_proba(faces)
    np.testing.assert_allclose(plain, expected, rtol=1e-5, atol=1e-6)
    soft = teacher_probabilities([teacher_run], faces, temperature=3.0)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(soft.argmax(axis=1), plain.argmax(axis=1))
    entropy = lambda p: -(p * np.log(p)).sum(axis=1)  # noqa: E731
    assert (entropy(soft) > entropy(plain)).all()
    # Two teachers are one ensemble: the mean of their probabilities.
    np.testing.assert_allclose(teacher_probabilities([teacher_run, teacher_run], faces), plain, rtol=1e-5)


@pytest.mark.slow
def test_student_trains_on_its_teachers_targets(tmp_path, teacher_run, capsys):
    cfg = quick_cfg(tmp_path / "student", teacher=[str(teacher_run)], distill_weight=1.0)
    splits = parts.load_splits(cfg)
    train_ds, _, _ = parts.make_datasets(cfg, splits)
    targets = np.concatenate([y.numpy() for _, y in train_ds])
    probs = teacher_probabilities([teacher_run], splits["train"].images)
    # Shuffled, so compare as a multiset of rows: exactly the teacher's probabilities, no one-hot left.
    np.testing.assert_allclose(np.sort(targets, axis=0), np.sort(probs, axis=0), rtol=1e-5, atol=1e-6)
    assert targets.max() < 1.0
    assert "teachers agree with" in capsys.readouterr().out
    train(cfg, verbose=0)
    saved = json.loads((Path(cfg["out"]) / "config.json").read_text())
    assert saved["teacher"] == [str(teacher_run)] and saved["distill_weight"] == 1.0


def test_a_missing_teacher_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "tiny_cnn", "--limit", "300", "--epochs", "1", "--wandb", "disabled", "--no-export",
              "--teacher", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "nowhere" in err


def test_drop_conflicts_removes_every_training_row_of_a_relabelled_image(tmp_path, capsys):
    data = load_fer2013(default_data())
    images, labels = data.images[:200].copy(), data.labels[:200].copy()
    images[1] = images[0]
    labels[1] = (labels[0] + 1) % NUM_CLASSES  # one image, two labels: both rows go
    images[3] = images[2]
    labels[3] = labels[2]  # a plain duplicate stays
    usage = np.array(["Training"] * 150 + ["PublicTest"] * 50)
    path = tmp_path / "dups.csv"
    write_csv(path, images, labels, usage)
    kept = parts.load_splits(quick_cfg(tmp_path / "run", data=str(path), limit=None, drop_conflicts=True))
    assert len(kept["train"]) == 148 and len(kept["val"]) == 50
    assert "dropped 2 training faces" in capsys.readouterr().out
    assert len(parts.load_splits(quick_cfg(tmp_path / "run", data=str(path), limit=None))["train"]) == 150
