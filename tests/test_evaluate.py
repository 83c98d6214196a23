"""Metrics, plots, evaluate_model / write_evaluation and the `python -m fer_keras.evaluate` CLI."""

import json
import math

import keras
import numpy as np
import pytest

from fer_keras.constants import CLASS_NAMES, NUM_CLASSES
from fer_keras.data import load_fer2013, split_data
from fer_keras.data.synthetic import write_synthetic_csv
from fer_keras.evaluation.evaluate import evaluate_model, main, write_evaluation
from fer_keras.evaluation.metrics import compute_metrics
from fer_keras.models.common import image_input, logits
from fer_keras.evaluation.plots import plot_confusion_matrix, plot_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _confident(pred, p=0.9):
    """Probabilities putting `p` on the predicted class and the rest evenly elsewhere."""
    probs = np.full((len(pred), NUM_CLASSES), (1 - p) / (NUM_CLASSES - 1))
    probs[np.arange(len(pred)), pred] = p
    return probs


def test_metrics_of_perfect_predictions():
    y = np.repeat(np.arange(NUM_CLASSES), 2)
    m = compute_metrics(y, _confident(y))
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["macro_precision"] == 1.0
    assert m["loss"] == pytest.approx(-math.log(0.9))
    assert m["confusion_matrix"] == (2 * np.eye(NUM_CLASSES, dtype=int)).tolist()
    assert all(c == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2} for c in m["per_class"].values())
    assert compute_metrics(y, _confident(y), loss=0.25)["loss"] == 0.25


def test_metrics_with_one_wrong_prediction():
    y = np.arange(NUM_CLASSES)
    pred = y.copy()
    pred[6] = 0  # a Neutral face called Angry
    m = compute_metrics(y, _confident(pred))
    assert m["n"] == 7 and m["accuracy"] == pytest.approx(6 / 7)
    assert m["per_class"]["Angry"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["per_class"]["Neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["macro_f1"] == pytest.approx((5 + 2 / 3) / 7)
    assert m["macro_precision"] == pytest.approx(5.5 / 7) and m["macro_recall"] == pytest.approx(6 / 7)
    assert m["confusion_matrix"][6] == [1, 0, 0, 0, 0, 0, 0]
    assert m["loss"] == pytest.approx(-(6 * math.log(0.9) + math.log(0.1 / 6)) / 7)
    assert "Neutral" in m["report"] and "macro avg" in m["report"]


def test_metrics_keep_an_absent_class():
    y = np.array([0, 2, 3, 4, 5, 6])  # no Disgust
    m = compute_metrics(y, _confident(y))
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (7, 7) and cm[1].sum() == 0 and cm[:, 1].sum() == 0
    assert m["per_class"]["Disgust"]["support"] == 0 and m["per_class"]["Disgust"]["f1"] == 0.0
    assert m["accuracy"] == 1.0 and m["macro_f1"] == pytest.approx(6 / 7)  # every class counts
    assert all(name in m["report"] for name in CLASS_NAMES)


def _assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left


@pytest.mark.parametrize("columns", ["epoch,accuracy,loss,val_accuracy,val_loss",
                                     "epoch,accuracy,f1_score,learning_rate,loss,val_accuracy,val_f1_score,val_loss"])
def test_plot_history_from_a_csvlogger_file(tmp_path, columns):
    names = columns.split(",")
    rows = [[str(e)] + [f"{0.5 + 0.01 * e:.3f}"] * (len(names) - 1) for e in range(5)]
    rows.append(rows[-1])  # a resumed run may log its last epoch twice
    csv = tmp_path / "history.csv"
    csv.write_text("\n".join(",".join(r) for r in [names, *rows]) + "\n")
    plot_history(csv, tmp_path / "plots" / "history.png")
    _assert_png(tmp_path / "plots" / "history.png")


@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion_matrix(tmp_path, normalize):
    cm = np.arange(49).reshape(7, 7)
    cm[1] = 0  # an absent class must not divide by zero
    with np.errstate(all="raise"):
        plot_confusion_matrix(cm, tmp_path / "cm.png", normalize=normalize, title="test")
    _assert_png(tmp_path / "cm.png")


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "fer2013.csv"
    write_synthetic_csv(path, n=140, seed=0)
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_csv):
    """A run folder holding a tiny trained model.keras and its config.json."""
    inputs, x = image_input()
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(x)
    model = keras.Model(inputs, logits(keras.layers.GlobalAveragePooling2D()(x)))
    model.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True))
    train = split_data(load_fer2013(synthetic_csv))["train"]
    model.fit(train.images, keras.utils.to_categorical(train.labels, NUM_CLASSES), epochs=2, verbose=0)
    run = tmp_path_factory.mktemp("run")
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"data": str(synthetic_csv), "seed": 0, "val_fraction": 0.1}))
    return run, model


def test_evaluate_model_and_write_evaluation(tmp_path, synthetic_csv, tiny_run):
    _, model = tiny_run
    splits = split_data(load_fer2013(synthetic_csv))
    unlabelled = splits["test"].subset(np.arange(3))
    unlabelled.labels = None
    results = evaluate_model(model, {**splits, "unlabelled": unlabelled}, batch_size=32, verbose=0)
    assert set(results) == set(splits) == {"train", "val", "test"}
    for name, m in results.items():
        cm = np.array(m["confusion_matrix"])
        assert cm.sum() == m["n"] == len(splits[name])
        assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
        assert cm.sum(axis=1).tolist() == np.bincount(splits[name].labels, minlength=7).tolist()

    written = write_evaluation(tmp_path, results, extra={"params": model.count_params(), "epochs": 2})
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == written
    for name in ("train", "val", "test"):
        assert {"accuracy", "loss", "macro_f1", "confusion_matrix", "per_class"} <= on_disk[name].keys()
        assert "report" not in on_disk[name]
        _assert_png(tmp_path / "plots" / f"confusion_matrix_{name}.png")
    assert on_disk["train_val_gap"] == pytest.approx(results["train"]["accuracy"] - results["val"]["accuracy"])
    assert on_disk["params"] == model.count_params() and on_disk["epochs"] == 2
    report = (tmp_path / "classification_report.txt").read_text()
    assert [line for line in report.splitlines() if line.startswith("==")] == [
        f"== {name} ({results[name]['n']} images) ==" for name in results
    ]


def test_evaluate_cli_on_a_run_folder(tiny_run, synthetic_csv, capsys):
    run, model = tiny_run
    assert main([str(run), "--split", "PublicTest", "--batch-size", "64"]) == 0
    metrics = json.loads((run / "eval-val" / "metrics.json").read_text())
    expected = evaluate_model(model, {"val": split_data(load_fer2013(synthetic_csv))["val"]}, verbose=0)["val"]
    assert metrics["val"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert metrics["val"]["confusion_matrix"] == expected["confusion_matrix"]
    assert metrics["data"] == str(synthetic_csv) and set(metrics) == {"val", "model", "data"}
    assert (run / "eval-val" / "plots" / "confusion_matrix_val.png").exists()
    assert f"val: accuracy {expected['accuracy']:.4f}" in capsys.readouterr().out


def test_evaluate_cli_on_a_model_file_with_data_and_out(tiny_run, synthetic_csv, tmp_path):
    run, _ = tiny_run
    assert main([str(run / "model.keras"), "--data", str(synthetic_csv), "--split", "test",
                 "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["test"]["n"] == int((load_fer2013(synthetic_csv).usage == "PrivateTest").sum())
    assert (tmp_path / "ev" / "classification_report.txt").read_text().startswith("== test")


def _write_csv(path, header, rows):
    pixels = " ".join(["128"] * 2304)
    path.write_text(header + "\n" + "".join(row.format(pixels=pixels) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("case, message", [
    ("missing_model", "no model at"),
    ("absent_split", "no test split"),
    ("no_labels", "no labels"),
    ("bad_split", "unknown split"),
])
def test_evaluate_cli_errors(case, message, tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    model, split = str(run), "test"
    if case == "missing_model":
        model = str(tmp_path / "nothing")
        data = tmp_path / "unused.csv"
    elif case == "absent_split":
        rows = [f"{c},{{pixels}},{usage}" for usage in ("Training", "PublicTest") for c in (0, 3)]
        data = _write_csv(tmp_path / "no_test.csv", "emotion,pixels,Usage", rows)
    elif case == "no_labels":
        data = _write_csv(tmp_path / "test.csv", "pixels", ["{pixels}"] * 3)
    else:
        data, split = tmp_path / "unused.csv", "Validation"
    with pytest.raises(SystemExit) as exc:
        main([model, "--data", str(data), "--split", split])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err and message in err
