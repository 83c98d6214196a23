"""Photos to FER2013-style faces: read any image (file, array or PIL) as RGB or grayscale, find faces
(`fer_keras.inference.detectors`), make 48x48 crops."""

import functools
import os

import numpy as np
from PIL import Image, ImageOps

from fer_keras.constants import IMAGE_SHAPE, IMAGE_SIZE
from fer_keras.inference.detectors import DEFAULT_DETECTOR, make_detector
from fer_keras.errors import FerError, ImageError

FACE_MARGIN = 0.1
MIN_IMAGE_SIDE = 16  # pixels a side: a smaller image holds no face worth classifying


def image_extensions():
    """File extensions Pillow can open (used to pick image files inside folders)."""
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def read_rgb(path):
    """Read an image file of any mode (L, RGB, RGBA, P, I;16, ...) as a uint8 RGB array (H, W, 3).

    Transparent pixels are composited over white; 16-bit images are scaled to 0-255; EXIF
    orientation is applied. A file that is not an image, or is truncated or damaged, raises ImageError.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_to_rgb(ImageOps.exif_transpose(image))
    except Exception as exc:  # Pillow's decoders raise any type for a damaged file (TypeError: TIFF float offsets)
        raise ImageError(f"{path}: cannot read image: {str(exc) or type(exc).__name__}") from None


def read_gray(path):
    """Read an image file as a uint8 grayscale array (H, W), by the rules of `read_rgb`."""
    return rgb_to_gray(read_rgb(path))


def to_rgb(image, color="rgb"):
    """A path, PIL image or uint8 array as a uint8 RGB array (H, W, 3).

    Arrays are (H, W) or (H, W, 1) grayscale, or (H, W, 3) / (H, W, 4) in channel order `color`
    ("rgb", or "bgr" as OpenCV gives them); alpha is composited over white. Anything else raises ImageError.
    """
    if color not in ("rgb", "bgr"):
        raise FerError(f"color must be 'rgb' or 'bgr', got {color!r}")
    if isinstance(image, (str, os.PathLike)):
        return read_rgb(image)
    if isinstance(image, Image.Image):
        try:
            return _pil_to_rgb(image)
        except Exception as exc:  # noqa: BLE001  (an unloadable or unconvertible PIL image)
            raise ImageError(f"cannot convert the PIL image (mode {image.mode}): {exc}") from None
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected an image path, a numpy array or a PIL image, got {type(image).__name__}")
    return _array_to_rgb(image, color)


def _array_to_rgb(array, color):
    """uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) in channel order `color` -> RGB (H, W, 3)."""
    if array.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image (values 0-255), got dtype {array.dtype}; a float image in 0-1 "
                         "converts with (image * 255).round().astype(np.uint8)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or array.ndim == 3 and array.shape[2] not in (3, 4):
        raise ImageError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.size == 0:
        raise ImageError(f"empty image: shape {array.shape}")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if color == "bgr":
        array = array[..., [2, 1, 0, 3][: array.shape[2]]]
    return _pil_to_rgb(Image.fromarray(np.ascontiguousarray(array)))


def _pil_to_rgb(image):
    """Pillow image of any mode -> uint8 RGB array."""
    if image.mode.startswith("I"):  # 16/32-bit integer grayscale: convert("L") would clip at 255
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) / 257.0, 0, 255).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return np.asarray(image.convert("RGB"))


def rgb_to_gray(rgb):
    """uint8 RGB array (H, W, 3) -> uint8 grayscale (H, W), with Pillow's ITU-R 601-2 luma."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


def to_face(gray):
    """uint8 grayscale array (H, W) -> uint8 (48, 48, 1): centre square crop, antialiased resize."""
    image = ImageOps.fit(Image.fromarray(gray), (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(image)[..., None]


def check_size(image, where=None):
    """ImageError (prefixed by `where`, e.g. the file) unless the image array is at least MIN_IMAGE_SIDE pixels
    on each side."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ImageError(f"{f'{where}: ' if where else ''}the image is {width}x{height} pixels, too small to hold a "
                         f"face (at least {MIN_IMAGE_SIDE} pixels a side)")


def find_faces(rgb, detector=None, where=None):
    """`(boxes, crops)` of the faces in a uint8 RGB array, left to right: boxes (x, y, w, h) found by `detector`
    (default: the default detector), and their 48x48 crops (N, 48, 48, 1) as the models take them.
    ImageError for an image too small to hold a face (see `check_size`)."""
    check_size(rgb, where)
    boxes = [tuple(int(v) for v in box) for box in (detector or _default_detector())(rgb)]
    return boxes, face_crops(rgb_to_gray(rgb), boxes)


def face_crops(gray, boxes):
    """The 48x48 crops (N, 48, 48, 1) of the face boxes (grown by FACE_MARGIN) in a uint8 grayscale array."""
    if not boxes:
        return np.zeros((0, *IMAGE_SHAPE), np.uint8)
    return np.stack([to_face(crop_face(gray, box)) for box in boxes])


def detect_faces(image):
    """Face boxes (x, y, w, h) found by the default detector in a uint8 grayscale or RGB array, left to right."""
    return _default_detector()(image)


@functools.cache
def _default_detector():
    """The default detector, built once (loading a detector reads its model files)."""
    return make_detector(DEFAULT_DETECTOR)


def crop_face(gray, box, margin=FACE_MARGIN):
    """The face box grown by `margin` of its size on every side (clipped to the image)."""
    x, y, w, h = box
    dx, dy = round(w * margin), round(h * margin)
    return gray[max(y - dy, 0) : y + h + dy, max(x - dx, 0) : x + w + dx]
