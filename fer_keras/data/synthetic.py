"""A synthetic FER-like dataset: procedurally drawn 48x48 faces whose expression follows the class.

Each class has a prototype of expression features (mouth curve, opening, width and asymmetry, teeth,
inner and outer brow height, eye openness, nose wrinkle). Every face blends its prototype a little
towards a random other class and adds noise, so neighbouring classes overlap: learnable, not
trivial. Pose, scale, face shape, hair, lighting, contrast, blur and noise vary per face, and the
classes are as imbalanced as FER2013's Training split. Pure numpy, vectorised over faces.
"""

from pathlib import Path

import numpy as np

from fer_keras.constants import IMAGE_SIZE, NUM_CLASSES
from fer_keras.data.csvfile import write_csv
from fer_keras.errors import FerError
from fer_keras.core.paths import cache_dir

VERSION = 2  # bump when the drawing changes, so default_data regenerates
DEFAULT_N = 6000  # 4,800 Training faces: an epoch of a small CNN takes seconds on 2 CPU cores
TRAINING_COUNTS = np.array([3995, 436, 4097, 7215, 4830, 3171, 4965])
USAGE_FRACTIONS = {"Training": 0.8, "PublicTest": 0.1, "PrivateTest": 0.1}
_BATCH = 1000

# Expression features per class (rows: Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral).
_FEATURES = ("mouth_curve", "mouth_open", "mouth_width", "mouth_tilt", "teeth",
             "brow_inner", "brow_outer", "eye_open", "wrinkle")
_PROTOTYPES = np.array([
    # curve  open  width  tilt  teeth  b_in   b_out  eyes  wrinkle
    [-0.08, 0.03, 0.24, 0.00, 0.35, 0.15, -0.05, 0.70, 0.35],  # Angry: brows down inside, tight mouth
    [-0.10, 0.05, 0.26, 0.16, 0.20, 0.08, 0.03, 0.55, 1.00],   # Disgust: lip raised on one side, wrinkle
    [-0.06, 0.12, 0.32, 0.00, 0.30, -0.14, -0.02, 1.50, 0.00],  # Fear: raised inner brows, wide eyes
    [0.24, 0.07, 0.36, 0.00, 0.80, -0.02, -0.02, 0.60, 0.00],   # Happy: smile, teeth, squint
    [-0.22, 0.00, 0.27, 0.00, 0.00, -0.12, 0.09, 0.75, 0.00],   # Sad: frown, brows up inside, down outside
    [0.00, 0.30, 0.20, 0.00, 0.10, -0.18, -0.18, 1.70, 0.00],   # Surprise: open mouth, raised brows
    [0.00, 0.00, 0.28, 0.00, 0.00, 0.00, 0.00, 1.00, 0.00],     # Neutral
], np.float32)
_NOISE = np.array([0.05, 0.04, 0.03, 0.05, 0.25, 0.04, 0.04, 0.20, 0.25], np.float32)
_LOW = np.array([-0.4, 0.0, 0.15, -0.3, 0.0, -0.3, -0.25, 0.25, 0.0], np.float32)
_HIGH = np.array([0.4, 0.4, 0.44, 0.3, 1.0, 0.25, 0.2, 2.1, 1.0], np.float32)
_MAX_BLEND = 0.6  # a face moves at most this far towards another class's prototype
_PIXEL = 2.0 / IMAGE_SIZE  # one pixel in face units (the image spans -1..1)


def class_counts(n):
    """Rows per class for `n` faces, proportional to FER2013's Training counts (each class >= 1)."""
    if n < NUM_CLASSES:
        raise FerError(f"a synthetic dataset needs at least {NUM_CLASSES} faces (one per class), got {n}")
    counts = np.maximum(np.floor(n * TRAINING_COUNTS / TRAINING_COUNTS.sum()).astype(int), 1)
    counts[np.argmax(counts)] += n - counts.sum()
    return counts


def generate(n=DEFAULT_N, seed=0):
    """`(images uint8 (n, 48, 48, 1), labels int64 (n,), usage str (n,))`, the same for the same seed."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), class_counts(n)))
    usage = _usage(labels, rng)
    images = np.concatenate([draw(labels[i:i + _BATCH], rng) for i in range(0, n, _BATCH)])
    return images[..., None], labels.astype(np.int64), usage


def write_synthetic_csv(path, n=DEFAULT_N, seed=0):
    """Write `n` synthetic faces as a fer2013.csv layout file (`.gz` gzipped) with a Usage column."""
    images, labels, usage = generate(n, seed)
    write_csv(path, images, labels, usage)
    return Path(path)


def default_data(n=None, seed=0):
    """Path of the embedded default dataset, generated once into the cache dir and then reused."""
    n = DEFAULT_N if n is None else n
    path = cache_dir() / "synthetic" / f"synthetic-v{VERSION}-n{n}-seed{seed}.csv.gz"
    if not path.exists():
        write_synthetic_csv(path, n, seed)  # atomic: a half-written file never appears at `path`
    return path


def _usage(labels, rng):
    """Training / PublicTest / PrivateTest, about 80/10/10 within every class."""
    usage = np.empty(len(labels), dtype="<U11")
    for c in range(NUM_CLASSES):
        rows = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum(list(USAGE_FRACTIONS.values())) * len(rows)).astype(int)
        for name, part in zip(USAGE_FRACTIONS, np.split(rows, cuts[:-1])):
            usage[part] = name
    return usage


def _expressions(labels, rng):
    """Per-face expression features: the class prototype blended towards another class, plus noise."""
    other = (labels + rng.integers(1, NUM_CLASSES, len(labels))) % NUM_CLASSES
    blend = (_MAX_BLEND * rng.random(len(labels)) ** 2)[:, None].astype(np.float32)
    features = (1 - blend) * _PROTOTYPES[labels] + blend * _PROTOTYPES[other]
    features += _NOISE * rng.standard_normal(features.shape).astype(np.float32)
    features[:, 3] *= rng.choice([-1, 1], len(labels))  # which side the lip rises
    return dict(zip(_FEATURES, np.clip(features, _LOW, _HIGH).T[:, :, None, None]))


def draw(labels, rng):
    """Render faces for `labels` as uint8 (B, 48, 48).

    The random draws do not depend on the labels: the same `rng` state gives the same faces
    (pose, lighting, noise) with other expressions.
    """
    b = len(labels)
    e = _expressions(labels, rng)

    def face(lo, hi):
        return rng.uniform(lo, hi, (b, 1, 1)).astype(np.float32)

    u, v = _face_coordinates(b, rng)
    skin, background = face(90, 210), face(15, 235)
    oval = 1 - (u / face(0.78, 0.95)) ** 2 - ((v - 0.05) / face(1.0, 1.2)) ** 2
    img = background + (skin - background) * _soft(oval * 8)
    img *= 1 - 0.18 * np.clip(u**2 + (v - 0.1) ** 2, 0, 1.5)  # rounded shading
    hair = (rng.random((b, 1, 1)) < 0.6) * _soft((face(-0.85, -0.6) - v + 0.15 * u**2) / _PIXEL)
    img += (face(10, 60) - img) * hair

    ink = face(70, 110)  # how dark features are drawn
    eye_x, eye_y, brow_y = face(0.30, 0.40), face(-0.22, -0.10), face(-0.46, -0.38)
    for side in (-1, 1):
        eye = _ellipse(u - side * eye_x, v - eye_y, 0.15, 0.065 * e["eye_open"])
        img -= (0.9 * ink) * eye
        along = np.clip((side * u - 0.12) / 0.46, 0, 1)
        brow_line = brow_y + e["brow_inner"] * (1 - along) + e["brow_outer"] * along - 0.08 * along * (1 - along)
        brow = _soft((0.06 - np.abs(v - brow_line)) / _PIXEL) * _soft((0.23 - np.abs(side * u - 0.35)) / _PIXEL)
        img -= ink * brow
    img -= 0.4 * ink * _ellipse(np.abs(u) - 0.08, v - 0.3, 0.04, 0.025)  # nostrils
    wrinkle = sum(_soft((0.02 - np.abs(v - y)) / _PIXEL) for y in (-0.12, -0.04, 0.04))
    img -= 0.5 * ink * e["wrinkle"] * wrinkle * _soft((0.12 - np.abs(u)) / _PIXEL)
    img += _mouth(u, v - face(0.52, 0.64), e, ink)

    gradient_angle = face(0, 2 * np.pi)
    x, y = _grid()
    img *= 1 + face(0, 0.35) * (np.cos(gradient_angle) * x + np.sin(gradient_angle) * y)
    mean = img.mean(axis=(1, 2), keepdims=True)
    img = (img - mean) * face(0.7, 1.2) + mean
    blurred = _box_blur(img)
    img += (blurred - img) * face(0, 1)
    img += face(2, 10) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _mouth(u, v, e, ink):
    """Brightness change of the mouth: lip line(s), a dark opening and teeth, at mouth-centred (u, v)."""
    width = e["mouth_width"]
    across = np.clip(u / width, -1, 1)
    inside = _soft((width - np.abs(u)) / _PIXEL)
    centre = -e["mouth_curve"] * across**2 + e["mouth_tilt"] * across * width
    half_open = e["mouth_open"] * (1 - across**2)
    offset = v - centre
    opening = _soft((half_open - np.abs(offset)) / _PIXEL) * inside
    lips = _soft((0.05 - np.abs(np.abs(offset) - half_open)) / _PIXEL) * inside
    teeth = opening * _soft(-offset / _PIXEL) * e["teeth"]
    return -ink * np.maximum(lips, opening) + 1.6 * ink * teeth


def _face_coordinates(b, rng):
    """Pixel grid in each face's frame: random shift, rotation and scale."""
    x, y = _grid()
    shift = rng.normal(0, 0.06, (2, b, 1, 1)).astype(np.float32)
    angle = np.radians(rng.normal(0, 6, (b, 1, 1))).astype(np.float32)
    scale = rng.uniform(0.95, 1.2, (b, 1, 1)).astype(np.float32)
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = x - shift[0], y - shift[1]
    return (cos * dx + sin * dy) / scale, (cos * dy - sin * dx) / scale


def _grid():
    """Pixel centres in -1..1, x to the right and y down, shaped to broadcast over faces."""
    t = (np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5) * _PIXEL - 1
    return t[None, None, :], t[None, :, None]


def _soft(t):
    """A step from 0 to 1 over about one unit of `t` (anti-aliased edges)."""
    return np.clip(t + 0.5, 0, 1)


def _ellipse(du, dv, half_width, half_height):
    """Soft filled ellipse around (0, 0)."""
    q = (du / half_width) ** 2 + (dv / np.maximum(half_height, 1e-3)) ** 2
    return _soft((1 - q) * np.minimum(half_width, half_height) / _PIXEL)


def _box_blur(img):
    """3x3 box blur with edge padding."""
    p = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return (rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]) / 9
