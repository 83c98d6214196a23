"""Facial expressions over time in a video: every face in every N-th frame, as a table, a plot and an annotated video.

`python -m fer_keras.video IN [--every N] [--out DIR] [--model PATH ...] [--tta [flip|flip_rotate]] [--detector NAME]`

`--out` (default `<IN's name>_emotions/` in the current folder) receives:
- `emotions.csv`: one row per face per analysed frame: frame, time (s), x, y, w, h, the seven class
  probabilities and the top emotion;
- `emotions_over_time.png`: each emotion's probability, averaged over the faces of a frame, against time;
- `annotated.mp4`: the analysed frames with each face's box and label, at the video's frame rate / N
  (at least 0.1 frames per second; OpenCV's VideoWriter, MPEG-4 Part 2; no ffmpeg binary needed).

Without `--model`, the shipped model is used. A missing, corrupt or unsupported video, or one whose frames are
under 16 pixels a side, is one `error:` line, and a failed run leaves no output folder it created.
"""

import argparse
import contextlib
import itertools
import os
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fer_keras.inference.api import CLASS_COLORS, EmotionRecognizer, annotate
from fer_keras.inference.faces import MIN_IMAGE_SIDE
from fer_keras.core.cli import ArgumentParser, keras_verbosity, user_errors
from fer_keras.constants import CLASS_NAMES
from fer_keras.inference.detectors import DEFAULT_DETECTOR, DETECTORS
from fer_keras.errors import VideoError
from fer_keras.core.io import atomic_path, check_output
from fer_keras.inference.tta import add_tta_argument, bare_tta_before_file

COLUMNS = ["frame", "time", "x", "y", "w", "h", *CLASS_NAMES, "emotion"]
FOURCC = "mp4v"  # MPEG-4 Part 2: the codec OpenCV's bundled FFmpeg always has for .mp4
MIN_MOVIE_FPS = 0.1  # the annotated video's slowest frame rate: FFmpeg's mp4 writer refuses under about 0.01


def open_video(path):
    """`(capture, fps, frame_count)` for a video file readable by OpenCV's FFmpeg, with frames large enough to
    hold a face; else a VideoError saying why."""
    if not Path(path).is_file():
        raise VideoError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not capture.isOpened():
        raise VideoError(f"{path}: cannot open video (corrupt, truncated or not a video format FFmpeg reads)")
    if not fps > 0:
        capture.release()
        raise VideoError(f"{path}: the video has no frame rate")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if 0 < min(width, height) < MIN_IMAGE_SIDE:
        capture.release()
        raise VideoError(f"{path}: its frames are {width}x{height} pixels, too small to hold a face (at least "
                         f"{MIN_IMAGE_SIDE} pixels a side)")
    return capture, fps, max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)


def analyse_video(recognizer, path, out, every=1, verbose=True):
    """Detect and classify the faces of every `every`-th frame of video `path`; write the three outputs into
    folder `out` (each atomically) and return the emotions table."""
    capture, fps, count = open_video(path)
    out = check_output(out, folder=True)
    progress = keras.utils.Progbar(count or None, verbose=keras_verbosity(), unit_name="frame") if verbose else None
    rows, times = [], []
    try:
        with _removed_if_left_empty(out), atomic_path(out / "annotated.mp4") as movie:
            writer = None
            for index in itertools.count():
                if index % every:
                    if not capture.grab():
                        break
                else:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                    found = recognizer.detect(rgb)
                    time = index / fps
                    times.append(time)
                    rows += [[index, time, *face.box, *face.probabilities.values(), face.emotion] for face in found]
                    if writer is None:
                        writer = _writer(movie, max(fps / every, MIN_MOVIE_FPS), frame.shape, out / "annotated.mp4")
                    writer.write(cv2.cvtColor(annotate(rgb, found), cv2.COLOR_RGB2BGR))
                if progress:
                    progress.update(index + 1)
            if writer is None:
                raise VideoError(f"{path}: no frame could be decoded")
            writer.release()
    finally:
        capture.release()
    table = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_path(out / "emotions.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    plot_over_time(table, times, out / "emotions_over_time.png")
    return table


def _writer(path, fps, shape, shown):
    """An OpenCV VideoWriter for BGR frames of `shape` into the .mp4 file `path` (a temporary file: errors name
    `shown`, the file it becomes)."""
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*FOURCC), fps, shape[1::-1])
    if not writer.isOpened():
        raise VideoError(f"{shown}: OpenCV cannot write {FOURCC} video of {shape[1]}x{shape[0]} pixels at "
                         f"{fps:g} frames per second")
    return writer


@contextlib.contextmanager
def _removed_if_left_empty(folder):
    """Remove `folder` again when the block fails and leaves it empty, unless it was there before."""
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def plot_over_time(table, times, path):
    """Each emotion's mean probability over the faces of each analysed frame against time; frames without a
    face are gaps. Written as PNG atomically."""
    means = table.groupby("time")[list(CLASS_NAMES)].mean().reindex(times)
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    marker = "." if len(times) < 60 else None
    for name in CLASS_NAMES:
        ax.plot(means.index, means[name], label=name, color=np.array(CLASS_COLORS[name]) / 255, marker=marker)
    ax.set(xlabel="time (s)", ylabel="mean probability", ylim=(0, 1), xlim=(0, max(times[-1], 1e-3)),
           title="Emotions over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _parse_args(argv):
    parser = ArgumentParser(
        prog="python -m fer_keras.video", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("video", metavar="IN", help="video file (anything OpenCV's FFmpeg reads: mp4, avi, mkv, ...)")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="analyse every N-th frame (default 1)")
    parser.add_argument("--out", help="output folder (default: <IN's name>_emotions/)")
    parser.add_argument("--model", action="append",
                        help="SavedModel folder, .keras file or run folder; repeat for an ensemble "
                             "(default: the shipped model)")
    add_tta_argument(parser)
    parser.add_argument("--detector", choices=sorted(DETECTORS), default=DEFAULT_DETECTOR,
                        help=f"face detector (default {DEFAULT_DETECTOR})")
    args = parser.parse_args(bare_tta_before_file(sys.argv[1:] if argv is None else argv))
    if args.every < 1:
        parser.error("--every must be at least 1")
    return args


@user_errors
def main(argv=None):
    args = _parse_args(argv)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own messages ("moov atom not found") off
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # and OpenCV's warnings about them
    out = check_output(args.out or f"{Path(args.video).stem}_emotions", folder=True)
    open_video(args.video)[0].release()  # a bad video fails before the model loads
    recognizer = (EmotionRecognizer.load(args.model, tta=args.tta, detector=args.detector) if args.model
                  else EmotionRecognizer(tta=args.tta, detector=args.detector))
    table = analyse_video(recognizer, args.video, out, every=args.every)
    print(f"{len(table)} faces found in {table['frame'].nunique()} frames; wrote {out / 'emotions.csv'}, "
          f"{out / 'emotions_over_time.png'} and {out / 'annotated.mp4'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
