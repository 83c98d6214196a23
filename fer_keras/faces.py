"""Photos to FER2013-style faces: read any image as grayscale, find faces (OpenCV Haar), make 48x48 crops."""

import functools

import numpy as np
from PIL import Image, ImageOps

from fer_keras.constants import IMAGE_SIZE
from fer_keras.errors import FerError

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
FACE_MARGIN = 0.1


def image_extensions():
    """File extensions Pillow can open (used to pick image files inside folders)."""
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def read_gray(path):
    """Read an image file of any mode (L, RGB, RGBA, P, I;16, ...) as a uint8 grayscale array (H, W).

    Transparent pixels are composited over white; 16-bit images are scaled to 0-255; EXIF
    orientation is applied. A file that is not an image, or is truncated or damaged, raises FerError.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return _to_gray(ImageOps.exif_transpose(image))
    except Exception as exc:  # Pillow's decoders raise any type for a damaged file (TypeError: TIFF float offsets)
        raise FerError(f"{path}: cannot read image: {str(exc) or type(exc).__name__}") from None


def _to_gray(image):
    """Pillow image of any mode -> uint8 grayscale array."""
    if image.mode.startswith("I"):  # 16/32-bit integer grayscale: convert("L") would clip at 255
        return np.clip(np.asarray(image, dtype=np.float64) / 257.0, 0, 255).round().astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return np.asarray(image.convert("L"))


def to_face(gray):
    """uint8 grayscale array (H, W) -> uint8 (48, 48, 1): centre square crop, antialiased resize."""
    image = ImageOps.fit(Image.fromarray(gray), (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(image)[..., None]


@functools.cache
def _cascade():
    """OpenCV's frontal-face Haar cascade, shipped inside the opencv-python(-headless) 4.x wheel."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
    if cascade.empty():
        raise FerError(f"cannot load {HAAR_CASCADE} from {cv2.data.haarcascades}")
    return cascade


def detect_faces(gray, min_size=24):
    """Face boxes (x, y, w, h) found in a uint8 grayscale array, sorted left to right."""
    boxes = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
    return sorted((tuple(int(v) for v in box) for box in boxes), key=lambda b: (b[0], b[1]))


def crop_face(gray, box, margin=FACE_MARGIN):
    """The face box grown by `margin` of its size on every side (clipped to the image)."""
    x, y, w, h = box
    dx, dy = round(w * margin), round(h * margin)
    return gray[max(y - dy, 0) : y + h + dy, max(x - dx, 0) : x + w + dx]
