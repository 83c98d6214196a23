"""Facial expressions in photos from Python: find the faces, classify each one, draw the results.

>>> from fer_keras import EmotionRecognizer
>>> faces = EmotionRecognizer().detect("photo.jpg")        # the shipped model and the default detector
>>> [(face.box, face.emotion) for face in faces]
[((135, 44, 69, 89), 'Happy')]
>>> from fer_keras.inference.api import annotate
>>> PIL.Image.fromarray(annotate("photo.jpg", faces)).save("annotated.jpg")
"""

import dataclasses

import cv2
import numpy as np

from fer_keras.inference import faces as facelib
from fer_keras.constants import CLASS_NAMES
from fer_keras.inference.detectors import DEFAULT_DETECTOR, make_detector
from fer_keras.errors import FerError, ImageError
from fer_keras.inference.predictor import Predictor

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


class EmotionRecognizer:
    """A face detector and an expression classifier (one model or an ensemble, optionally with TTA).

    `predictor` is a `fer_keras.inference.predictor.Predictor` (it brings its own TTA mode) or what one takes (a
    Keras model, or a list of models for an ensemble); `ensemble` names model paths to load and average
    instead; with neither, the shipped model. `detector` is a name in `fer_keras.inference.detectors.DETECTORS`
    or any callable image -> boxes (x, y, w, h). `tta` is a mode of `fer_keras.inference.tta.tta_mode`
    (True: flip) for the models loaded here.

    >>> rec = EmotionRecognizer(ensemble=["runs/a", "runs/b/savedmodel"], tta=True)
    >>> rec.classify(np.zeros((2, 48, 48), np.uint8)).shape
    (2, 7)
    """

    def __init__(self, predictor=None, *, ensemble=None, tta=False, detector=DEFAULT_DETECTOR):
        if predictor is not None and ensemble is not None:
            raise FerError("give a predictor or an ensemble of model paths, not both")
        if predictor is None:
            from fer_keras import pretrained

            predictor = Predictor.load(pretrained.model_path() if ensemble is None else ensemble, tta=tta)
        elif not isinstance(predictor, Predictor):
            predictor = Predictor(predictor, tta=tta)
        self.predictor = predictor
        self.detector = make_detector(detector)

    @property
    def tta(self):
        """The TTA mode of the predictor: None, `flip` or `flip_rotate`."""
        return self.predictor.tta

    @classmethod
    def load(cls, path_or_paths, tta=False, detector=DEFAULT_DETECTOR):
        """A recognizer from a run folder, `.keras` file, SavedModel or `.tflite` file; a list of them is an
        ensemble (probabilities averaged). ModelError for a missing or unusable model."""
        return cls(Predictor.load(path_or_paths, tta=tta), detector=detector)

    def detect(self, image, color="rgb"):
        """Every face found in `image`, left to right, each with its box and class probabilities.

        `image` is a file path, a PIL image or a uint8 array: (H, W) grayscale, or (H, W, 3) / (H, W, 4)
        in channel order `color` ("rgb", or "bgr" for arrays from OpenCV). ImageError for an unusable image,
        one under `faces.MIN_IMAGE_SIDE` pixels a side included.
        """
        boxes, crops = facelib.find_faces(facelib.to_rgb(image, color), self.detector)
        if not boxes:
            return []
        return [Face(box, dict(zip(CLASS_NAMES, map(float, p)))) for box, p in zip(boxes, self.classify(crops))]

    def classify(self, faces):
        """Probabilities (N, 7) for pre-cropped grayscale faces, uint8 or float in 0-255: (N, 48, 48), (N, 48, 48, 1)
        or a single (48, 48)."""
        if np.size(faces) == 0:
            raise ImageError(f"no faces to classify: the array is empty (shape {np.shape(faces)})")
        return self.predictor.predict_proba(faces)


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
