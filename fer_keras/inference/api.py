"""Facial expressions in photos from Python: find the faces, classify each one, draw the results.

>>> from fer_keras import EmotionRecognizer
>>> faces = EmotionRecognizer().detect("photo.jpg")        # the shipped model and the default detector
>>> [(face.box, face.emotion) for face in faces]
[((135, 44, 69, 89), 'Happy')]
>>> from fer_keras.inference.api import annotate
>>> PIL.Image.fromarray(annotate("photo.jpg", faces)).save("annotated.jpg")
"""

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np

from fer_keras.inference import faces as facelib
from fer_keras.constants import CLASS_NAMES, IMAGE_SIZE
from fer_keras.inference.detectors import DEFAULT_DETECTOR, make_detector
from fer_keras.errors import FerError, ImageError, ModelError
from fer_keras.inference.predict import load_predictor, predict_probabilities
from fer_keras.inference.tta import tta_mode

# One colour per class (RGB) for boxes and labels.
CLASS_COLORS = {
    "Angry": (220, 50, 47), "Disgust": (133, 153, 0), "Fear": (108, 113, 196), "Happy": (250, 190, 20),
    "Sad": (38, 139, 210), "Surprise": (211, 54, 130), "Neutral": (160, 160, 160),
}


@dataclasses.dataclass(frozen=True)
class Face:
    """One face in an image: its box (x, y, w, h) in pixels and its probability per class name."""

    box: tuple
    probabilities: dict

    @property
    def emotion(self):
        """The most probable class name."""
        return max(self.probabilities, key=self.probabilities.get)

    def to_dict(self):
        """`{"box": [x, y, w, h], "emotion": name, "probabilities": {name: p, ...}}`, ready for `json.dumps`."""
        return {"box": list(self.box), "emotion": self.emotion, "probabilities": dict(self.probabilities)}


def _load_predictors(path_or_paths):
    """One predictor per model path (a path or a list of them); ModelError for a missing or bad one."""
    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    predictors = []
    for path in paths:
        if not Path(path).exists():
            raise ModelError(f"{path}: no such model file or folder")
        try:
            predictors.append(load_predictor(path))
        except FerError as exc:
            raise ModelError(str(exc)) from None
    return predictors


class EmotionRecognizer:
    """A face detector and an expression classifier (one model or an ensemble, optionally with TTA).

    `predictors` are functions float32 faces (N, 48, 48, 1) in 0-255 -> probabilities (N, 7), as
    `fer_keras.inference.predict.load_predictor` makes them; `ensemble` names model paths to average instead;
    with neither, the shipped model. `detector` is a name in `fer_keras.inference.detectors.DETECTORS` or any
    callable image -> boxes (x, y, w, h). `tta` is a mode of `fer_keras.inference.tta.tta_mode` (True: flip).

    >>> rec = EmotionRecognizer(ensemble=["runs/a", "runs/b/savedmodel"], tta=True)
    >>> rec.classify(np.zeros((2, 48, 48), np.uint8)).shape
    (2, 7)
    """

    def __init__(self, predictors=None, *, ensemble=None, tta=False, detector=DEFAULT_DETECTOR):
        if ensemble is not None:
            predictors = (predictors or []) + _load_predictors(ensemble)
        if predictors is None:
            from fer_keras import pretrained

            predictors = [load_predictor(pretrained.model_path())]
        self.predictors = list(predictors)
        if not self.predictors:
            raise ModelError("no model given")
        self.tta = tta_mode(tta)
        self.detector = make_detector(detector)

    @classmethod
    def load(cls, path_or_paths, tta=False, detector=DEFAULT_DETECTOR):
        """A recognizer from a run folder, `.keras` file, SavedModel or `.tflite` file; a list of them is an
        ensemble (probabilities averaged)."""
        return cls(_load_predictors(path_or_paths), tta=tta, detector=detector)

    def detect(self, image, color="rgb"):
        """Every face found in `image`, left to right, each with its box and class probabilities.

        `image` is a file path, a PIL image or a uint8 array: (H, W) grayscale, or (H, W, 3) / (H, W, 4)
        in channel order `color` ("rgb", or "bgr" for arrays from OpenCV).
        """
        rgb = facelib.to_rgb(image, color)
        gray = facelib.rgb_to_gray(rgb)
        boxes = [tuple(int(v) for v in box) for box in self.detector(rgb)]
        if not boxes:
            return []
        probs = self.classify(np.stack([facelib.to_face(facelib.crop_face(gray, box)) for box in boxes]))
        return [Face(box, dict(zip(CLASS_NAMES, map(float, p)))) for box, p in zip(boxes, probs)]

    def classify(self, faces):
        """Probabilities (N, 7) for pre-cropped grayscale faces, uint8 or float in 0-255: (N, 48, 48), (N, 48, 48, 1)
        or a single (48, 48)."""
        faces = np.asarray(faces)
        shape = faces.shape
        if not (faces.dtype == np.uint8 or np.issubdtype(faces.dtype, np.floating)):
            raise ImageError(f"expected uint8 or float faces (values 0-255), got dtype {faces.dtype}")
        if faces.size == 0:
            raise ImageError(f"no faces to classify: the array is empty (shape {faces.shape})")
        if faces.shape in ((IMAGE_SIZE, IMAGE_SIZE), (IMAGE_SIZE, IMAGE_SIZE, 1)):
            faces = faces[None]
        if faces.ndim == 3:
            faces = faces[..., None]
        if faces.ndim != 4 or faces.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1):
            raise ImageError(f"expected faces of shape (N, 48, 48), (N, 48, 48, 1) or (48, 48), got {shape}")
        if faces.dtype != np.uint8 and not (np.isfinite(faces).all() and faces.min() >= 0 and faces.max() <= 255):
            raise ImageError("float faces must hold finite values in 0-255 (the models' input scale)")
        return predict_probabilities(self.predictors, faces, tta=self.tta)


def annotate(image, faces, color="rgb"):
    """A copy of `image` (anything `detect` takes) as uint8 RGB, with each face's box and "Emotion 87%" label
    drawn in the class's colour."""
    canvas = facelib.to_rgb(image, color).copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for face in faces:
        x, y, w, h = face.box
        emotion = face.emotion
        box_color = CLASS_COLORS.get(emotion, (255, 255, 255))
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), box_color, thickness)
        label = f"{emotion} {face.probabilities[emotion]:.0%}"
        scale = float(np.clip(w / 120, 0.5, 1.5))
        weight = max(1, round(scale * 1.5))  # stroke width of the text
        (text_w, text_h), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
        label_w, label_h = text_w + 2 * weight + 2, text_h + baseline + 2 * weight
        left = max(min(x, canvas.shape[1] - label_w), 0)  # kept inside the image
        top = y - label_h if y >= label_h else y + h  # above the box, or below it at the top edge
        cv2.rectangle(canvas, (left, top), (left + label_w, top + label_h), box_color, cv2.FILLED)
        ink = (0, 0, 0) if np.dot(box_color, (0.299, 0.587, 0.114)) > 140 else (255, 255, 255)
        cv2.putText(canvas, label, (left + weight + 1, top + text_h + weight), cv2.FONT_HERSHEY_SIMPLEX, scale, ink,
                    weight, cv2.LINE_AA)
    return canvas
