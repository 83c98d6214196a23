"""Test-time augmentation: the views of each face that a prediction averages its probabilities over.

`flip` is the face and its mirror. `flip_rotate` adds both turned by +-6 degrees (the recipes train
with rotations of up to 10), with the training presets' own rotation layer (`fer_keras.data.augment.rotation`)
pinned to one angle: three times the prediction time; its gain is in docs/results.md.
"""

import functools
from pathlib import Path

import keras
import numpy as np

from fer_keras.data.augment import rotation
from fer_keras.errors import FerError

TTA_MODES = ("flip", "flip_rotate")
ROTATION_DEG = 6


def tta_mode(tta):
    """The mode `tta` asks for: None when off (None, False), `flip` for True, else a name in TTA_MODES."""
    if not tta:
        return None
    mode = "flip" if tta is True else tta
    if mode not in TTA_MODES:
        raise FerError(f"unknown TTA mode {mode!r}; known: {', '.join(TTA_MODES)}")
    return mode


def tta_views(images, tta=None):
    """The views of `images` (N, 48, 48, 1) that `tta` (see `tta_mode`) averages over, the faces first."""
    mode = tta_mode(tta)
    views = [images]
    if mode == "flip_rotate":
        faces = np.asarray(images, np.float32)
        views += [keras.ops.convert_to_numpy(_turn(deg)(faces, training=True)) for deg in (ROTATION_DEG, -ROTATION_DEG)]
    return views + [view[:, :, ::-1] for view in views] if mode else views


@functools.lru_cache(maxsize=None)
def _turn(deg):
    """The training rotation layer pinned to `deg` degrees counter-clockwise (float32 under any policy)."""
    return rotation((deg / 360, deg / 360), dtype="float32")


def add_tta_argument(parser):
    """`--tta [MODE]` for a command that predicts: a bare `--tta` is `flip`."""
    parser.add_argument("--tta", nargs="?", const="flip", choices=TTA_MODES, default=None,
                        help="average over test-time views of each face: flip (the face and its mirror; a bare "
                             "--tta) or flip_rotate (both also turned by +-6 degrees: 6 views, 3x the time)")


def bare_tta_before_file(argv):
    """`argv` with `flip` put after a `--tta` that an existing file follows, so that a bare `--tta` may stand
    before a command's file argument (`video --tta clip.mp4`) instead of taking the file as its mode."""
    argv = list(argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "--tta" and argv[i + 1] not in TTA_MODES and Path(argv[i + 1]).is_file():
            return [*argv[: i + 1], "flip", *argv[i + 1 :]]
    return argv
