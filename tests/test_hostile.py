"""Hostile inputs end in one clear error each, never a traceback, a runaway or lost files: tiny and thin
images (API, predict, server engine, video), models of the wrong shape, a folder without a model, a CSV
line without end, oversized and alias-bomb configs, a training folder that is not a run, absurd video
flags."""

import gzip
import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_keras import EmotionRecognizer
from fer_keras.core.cli import MAX_MESSAGE, error_message
from fer_keras.data import load_fer2013
from fer_keras.errors import DataError, FerError, ImageError, ModelError
from fer_keras.inference import predict, serve, video
from fer_keras.inference.detectors import DnnDetector
from fer_keras.models import build_model
from fer_keras.training import runner
from fer_keras.training.config import resolve_config

PHOTO = Path(__file__).parent / "fixtures" / "astronaut.jpg"
TINY_SHAPES = [(1, 1), (1, 1, 3), (2, 2, 4), (1, 100, 3), (100, 1), (3, 500, 3), (15, 300)]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "tiny.keras"
    build_model("tiny_cnn").save(path)
    return path


@pytest.fixture(scope="module")
def rec(model_path):
    return EmotionRecognizer.load(model_path)


# --- tiny and thin images ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", TINY_SHAPES)
@pytest.mark.parametrize("detector", ["dnn", "haar"])
def test_tiny_and_thin_images_are_an_image_error(model_path, shape, detector):
    rec = EmotionRecognizer.load(model_path, detector=detector)
    with pytest.raises(ImageError, match=r"too small to hold a face \(at least 16 pixels a side\)"):
        rec.detect(np.full(shape, 128, np.uint8))


def test_large_but_thin_images_do_not_crash_the_dnn_detector():
    """Scaled to 960 pixels, a 20x5000 image is 4 pixels high: under the network's minimum."""
    detector = DnnDetector()
    for shape in [(20, 5000, 3), (5000, 20, 3), (16, 20000, 3)]:
        assert detector(np.full(shape, 128, np.uint8)) == []


def test_server_engine_answers_422_for_a_tiny_image(rec):
    engine = serve.Engine(rec, "tiny")
    for size in [(1, 1), (1, 300), (300, 2)]:
        buffer = __import__("io").BytesIO()
        Image.new("RGB", size, "white").save(buffer, format="PNG")
        with pytest.raises(serve.ClientError, match="too small to hold a face") as caught:
            engine.predict(buffer.getvalue())
        assert caught.value.status == 422


def test_predict_reports_tiny_images_and_predicts_the_others(model_path, tmp_path, capsys):
    bad = {"dot.png": (1, 1), "row.png": (300, 1), "column.png": (1, 300), "small.png": (10, 10)}
    for name, size in bad.items():
        Image.new("L", size, 100).save(tmp_path / name)
    out = tmp_path / "pred.csv"
    out.write_text("stale,content\n")
    status = predict.main(["--model", str(model_path), "--detect-faces", "--out", str(out),
                           "--images", *(str(tmp_path / name) for name in bad), str(PHOTO)])
    err = capsys.readouterr().err.splitlines()
    assert status == 1
    assert sorted(line.split(": ")[0] for line in err) == sorted(str(tmp_path / name) for name in bad)
    assert all("too small to hold a face" in line for line in err)
    table = pd.read_csv(out)
    assert list(table["file"]) == [str(PHOTO)]  # the astronaut's face, predicted; the stale file replaced
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- model files ---------------------------------------------------------------------------------

def _dense_model(input_shape, classes):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(classes)(keras.layers.Flatten()(inputs)))


@pytest.mark.parametrize("input_shape, classes, message", [
    ((32, 32, 1), 7, r"maps \[N, 32, 32, 1\] to \[N, 7\]"),
    ((48, 48, 3), 7, r"maps \[N, 48, 48, 3\] to \[N, 7\]"),
    ((48, 48, 1), 5, r"maps \[N, 48, 48, 1\] to \[N, 5\]"),
])
def test_models_of_the_wrong_shape_are_refused_when_loaded(tmp_path, capsys, input_shape, classes, message):
    path = tmp_path / "wrong.keras"
    _dense_model(input_shape, classes).save(path)
    with pytest.raises(ModelError, match=message):
        EmotionRecognizer.load(path)
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--model", str(path), "--images", str(PHOTO), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "is not a fer_keras model" in err


def test_a_folder_without_a_model_is_a_model_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no model here")
    with pytest.raises(ModelError, match="is not a run folder holding model.keras"):
        EmotionRecognizer.load(tmp_path)


# --- data and config files -----------------------------------------------------------------------

def test_a_line_without_end_fails_at_once(tmp_path):
    path = tmp_path / "long.csv.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"emotion,pixels,Usage\n0,")
        f.write(b"1" * (24 << 20))  # 24 MB of one line, 24 KB compressed
        f.write(b",Training\n")
    with pytest.raises(DataError, match=r"long.csv.gz: line 2: over 1,048,576 bytes without a line break"):
        load_fer2013(path)


def test_an_endless_config_file_is_refused(tmp_path):
    with pytest.raises(FerError, match=r"config file /dev/zero is over 1,048,576 bytes"):
        resolve_config(config_file="/dev/zero")


def test_a_yaml_alias_bomb_gives_a_short_message(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("model_args: {" + ", ".join(lines) + "}\nepochs: [*a8, *a8]\n")  # 9**9 items, 700 bytes
    with pytest.raises(FerError, match="config key 'epochs': expected an integer") as caught:
        resolve_config(config_file=path)
    assert len(str(caught.value)) < 1000


def test_every_error_line_is_bounded():
    line = error_message(FerError("x" * 100_000))
    assert len(line) <= MAX_MESSAGE and line.endswith("(100,000 characters in all)")


# --- a training folder that is not a run ---------------------------------------------------------

def test_training_into_a_folder_of_other_files_is_refused(tmp_path):
    mine = {"config.json": '{"lr": 0.1}', "history.csv": "step,loss\n1,0.5\n", "notes.md": "mine"}
    for name, text in mine.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "plots").mkdir()
    with pytest.raises(FerError, match=r"is not a fer_keras run folder but holds config.json, history.csv, plots"):
        runner.run_training(resolve_config({"epochs": 1}), tmp_path)
    assert {name: (tmp_path / name).read_text() for name in mine} == mine


def test_new_empty_and_own_run_folders_are_accepted(tmp_path):
    runner._refuse_foreign_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    runner._refuse_foreign_folder(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "photo.jpg").write_bytes(b"")  # nothing a run writes: nothing overwritten
    runner._refuse_foreign_folder(tmp_path / "other")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(resolve_config({"epochs": 1})))
    (tmp_path / "run" / "history.csv").write_text("epoch,loss\n")
    runner._refuse_foreign_folder(tmp_path / "run")


# --- video ---------------------------------------------------------------------------------------

def _clip(path, size, frames=6):
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 60 + 20 * i, np.uint8))
    writer.release()
    return path


def test_a_video_of_tiny_frames_is_one_error_line(model_path, tmp_path, capsys):
    clip = _clip(tmp_path / "tiny.mp4", (8, 8))
    with pytest.raises(SystemExit) as exit_info:
        video.main([str(clip), "--model", str(model_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err == f"error: {clip}: its frames are 8x8 pixels, too small to hold a " \
                                                "face (at least 16 pixels a side)\n"
    assert not (tmp_path / "out").exists()


def test_an_absurd_every_still_writes_the_video(model_path, tmp_path, capsys):
    clip = _clip(tmp_path / "clip.mp4", (64, 48))
    out = tmp_path / "out"
    assert video.main([str(clip), "--every", "100000", "--model", str(model_path), "--out", str(out)]) == 0
    capture = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(video.MIN_MOVIE_FPS, rel=0.01)
    capture.release()


def test_a_failed_video_run_leaves_no_folder_it_made(model_path, tmp_path):
    def broken(rgb):
        raise ImageError("the detector fails")

    clip = _clip(tmp_path / "clip.mp4", (64, 48))
    recognizer = EmotionRecognizer.load(model_path, detector=broken)
    with pytest.raises(ImageError, match="the detector fails"):
        video.analyse_video(recognizer, clip, tmp_path / "new" / "out", verbose=False)
    assert not (tmp_path / "new" / "out").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ImageError):
        video.analyse_video(recognizer, clip, tmp_path / "kept", verbose=False)
    assert (tmp_path / "kept").is_dir()  # the user's own folder stays
