"""`python -m fer_keras.video` on a small video made here (synthetic faces pasted onto frames): the CSV
against the frames, the annotated video, the plot, and bad videos as one `error:` line."""

import os
import re
import subprocess
import sys

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_keras import EmotionRecognizer

from fer_keras.inference import faces
from fer_keras.constants import CLASS_NAMES
from fer_keras.data.synthetic import generate
from fer_keras.inference.detectors import iou
from fer_keras.models import build_model
from fer_keras.inference.video import COLUMNS, _parse_args, main

FPS = 10
SIZE = (240, 320)  # frame height, width
FACE = 96  # pasted face size in pixels
TF_STARTUP = re.compile(r"WARNING: All log messages before absl|[IWE]\d{4} |To enable the following instructions")


def _paste(frame, face, x, y):
    frame[y : y + FACE, x : x + FACE] = np.asarray(Image.fromarray(face).resize((FACE, FACE), Image.Resampling.BICUBIC))


def _background(index):
    """A plain grey frame with a little sensor noise, different in every frame."""
    return np.full(SIZE, 120, np.uint8) + np.random.default_rng(index).integers(0, 6, SIZE, dtype=np.uint8)


def _track(name, index):
    """Where face `name` is in frame `index`, or None: A slides right from frame 2 on, B stays put from frame 6."""
    if name == "A":
        return (10 + 4 * index, 50) if index >= 2 else None
    return (200, 90) if index >= 6 else None


def _scene(index, cast):
    """Frame `index` (grayscale) with the faces of `cast` ({name: 48x48 face}) on their tracks, and their boxes."""
    frame = _background(index)
    boxes = []
    for name, face in cast.items():
        if (place := _track(name, index)) is not None:
            _paste(frame, face, *place)
            boxes.append((*place, FACE, FACE))
    return frame, boxes


def _cast():
    """Two synthetic faces, each one the default detector finds alone at every place of its track (it misses
    about half of the synthetic faces, which are drawn, not photographed)."""
    cast = {}
    candidates = iter(generate(80, seed=3)[0][..., 0])
    for name in ("A", "B"):
        shown = [index for index in range(12) if _track(name, index)]
        cast[name] = next(face for face in candidates
                          if all(len(faces.detect_faces(_scene(index, {name: face})[0])) == 1 for index in shown))
    return cast


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 12-frame, 10 fps mp4 with no face in frames 0-1, one face in 2-5 and two in 6-11, and a small model."""
    root = tmp_path_factory.mktemp("video")
    cast = _cast()
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE[::-1])
    truth = {}
    for index in range(12):
        frame, truth[index] = _scene(index, cast)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    keras.utils.set_random_seed(1)
    build_model("simple_cnn", widths=(8, 16), dense_units=(16,)).save(root / "model.keras")
    return {"video": root / "clip.mp4", "model": root / "model.keras", "truth": truth}


def _frames(path):
    """Every frame of a video as BGR arrays, and its frame rate."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def test_csv_matches_the_faces_in_the_analysed_frames(clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(clip["video"]), "--every", "2", "--out", str(out), "--model", str(clip["model"])]) == 0
    assert "faces found in 5 frames" in capsys.readouterr().out  # frames 2, 4, ..., 10
    table = pd.read_csv(out / "emotions.csv")
    assert list(table.columns) == COLUMNS
    frames, _ = _frames(clip["video"])
    rec = EmotionRecognizer.load(clip["model"])
    for index in range(0, 12, 2):
        rows = table[table["frame"] == index]
        expected = clip["truth"][index]
        assert len(rows) == len(expected), f"frame {index}"
        boxes = [tuple(box) for box in rows[["x", "y", "w", "h"]].to_numpy()]
        assert all(iou(box, true) > 0.5 for box, true in zip(boxes, expected)), (index, boxes, expected)
        np.testing.assert_allclose(rows["time"], index / FPS)
        found = rec.detect(frames[index], color="bgr")
        assert [face.box for face in found] == boxes
        expected_probs = np.array([list(face.probabilities.values()) for face in found]).reshape(-1, len(CLASS_NAMES))
        np.testing.assert_allclose(rows[list(CLASS_NAMES)].to_numpy(), expected_probs, atol=1e-5)
        assert list(rows["emotion"]) == [face.emotion for face in found]
    assert set(table["frame"]) == {2, 4, 6, 8, 10}


def test_annotated_video_and_plot(clip, tmp_path):
    out = tmp_path / "out"
    assert main([str(clip["video"]), "--every", "3", "--out", str(out), "--model", str(clip["model"])]) == 0
    annotated, fps = _frames(out / "annotated.mp4")
    source, _ = _frames(clip["video"])
    assert len(annotated) == 4 and fps == pytest.approx(FPS / 3, abs=1e-3)  # frames 0, 3, 6, 9 at a third of the rate
    assert annotated[0].shape == source[0].shape
    assert (np.ptp(annotated[0].astype(int), axis=2) > 40).mean() < 1e-3, "frame 0 has no face, so nothing drawn"
    table = pd.read_csv(out / "emotions.csv")
    for frame, image in zip((3, 6, 9), annotated[1:]):
        for x, y, w, h in table[table["frame"] == frame][["x", "y", "w", "h"]].to_numpy():
            edge = image[y + h // 4 : y + 3 * h // 4, x].astype(int)  # the box's left edge, drawn in colour
            assert (np.ptp(edge, axis=1) > 40).mean() > 0.8, "the frames are grey: colour means a drawn box"
    plot = Image.open(out / "emotions_over_time.png")
    assert plot.format == "PNG" and plot.size == (900, 400)
    assert not any(p.name.startswith(".") for p in out.iterdir()), "no temporary file is left behind"


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such video file"),
    (b"this is text, not a video\n", "cannot open video"),
    ("truncated", "cannot open video"),
])
def test_bad_videos_are_one_error_line(clip, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.mp4"
    if content == "truncated":
        data = clip["video"].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif content is not None:
        bad.write_bytes(content)
    with pytest.raises(SystemExit) as info:
        main([str(bad), "--out", str(tmp_path / "out"), "--model", str(clip["model"])])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_corrupt_video_prints_only_the_error_line_from_a_fresh_process(tmp_path):
    """FFmpeg and OpenCV write their complaints straight to file descriptor 2, which only a subprocess shows;
    TensorFlow's start-up lines, which every command prints, are left out."""
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    result = subprocess.run([sys.executable, "-m", "fer_keras.video", str(bad), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if not TF_STARTUP.match(line)]
    assert lines == [f"error: {bad}: cannot open video (corrupt, truncated or not a video format FFmpeg reads)"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--every", "0"], "--every must be at least 1"),
    (["--detector", "yolo"], "invalid choice: 'yolo'"),
])
def test_bad_flags_are_one_error_line(clip, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main([str(clip["video"]), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_out_under_a_file_is_one_error_line(clip, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as info:
        main([str(clip["video"]), "--out", str(tmp_path / "file" / "out"), "--model", str(clip["model"])])
    assert info.value.code == 2
    assert "is a file" in capsys.readouterr().err


def test_a_bare_tta_may_stand_before_the_video(clip, capsys):
    video = str(clip["video"])
    args = _parse_args(["--tta", video])
    assert (args.tta, args.video) == ("flip", video)
    assert _parse_args(["--tta", "flip_rotate", video]).tta == "flip_rotate"
    assert _parse_args([video, "--tta"]).tta == "flip"
    with pytest.raises(SystemExit) as info:
        _parse_args(["--tta", "rotate", video])
    assert info.value.code == 2 and "invalid choice: 'rotate'" in capsys.readouterr().err
