"""End to end, photo -> faces -> emotions: fer_keras's API against the `fer` package (PyPI), for photos
with 1 and with 8 faces; latency per photo (p50 and p95, warm) and accuracy on PublicTest faces.

Photos are made here: real PublicTest faces (48x48, scaled up to `--face-size` px, bicubic) pasted on a
smooth noisy grey background, 1 face per photo or 8 in a jittered 4x2 grid, written as JPEG to `--work`
with `manifest.json` (where each face went, its label). Both libraries get each photo as a decoded
array (JPEG decoding is not timed). fer finds faces with its Haar cascade; fer_keras with the API's
default detector (`fer_keras.inference.detectors.DEFAULT_DETECTOR`) or `--detector`.

- fer_keras: `fer_keras.inference.api.EmotionRecognizer.load(MODEL).detect(rgb)` for each `--model` (the shipped
  model when none is given).
- fer: `FER().detect_emotions(bgr)` (its defaults: Haar cascade, the 93 KB int8 `.tflite` classifier), run
  by `--fer-python`, an interpreter of a separate environment where `fer` is installed (it needs torch
  and opencv-contrib-python, which clashes with fer_keras's opencv-python-headless), via a subprocess
  that never imports fer_keras.

Latency: `--warmup` calls, then every photo of a set once per round, `--rounds` rounds, the libraries
taking turns round by round; the table gives the median over rounds of each round's p50 and p95.
Accuracy: each classifier on all PublicTest faces directly (48x48; fer resizes to its 64x64 input as it
does for detected faces) and end to end (detected faces matched to pasted ones by box centre).

    PYTHONPATH=. python benchmarks/bench_photo.py [--model PATH ...] [--data fer2013.csv.gz]
        [--detector haar|dnn] [--fer-python /work/fer-venv/bin/python] [--photos 24] [--rounds 5]
        [--work DIR] [--json OUT]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from fer_keras.constants import CLASS_NAMES  # noqa: E402
from fer_keras.data import load_fer2013, split_data  # noqa: E402
from fer_keras.core.paths import find_real_data  # noqa: E402

FACES_PER_PHOTO = (1, 8)
DEFAULT_FER_PYTHON = "/work/fer-venv/bin/python"

# Runs in fer's environment: times FER().detect_emotions on the photos, classifies the 48x48 faces.
FER_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, time, warnings
    import numpy as np

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "fer_keras":
                raise ImportError("the fer side must not use fer_keras")

    sys.meta_path.insert(0, Refuse())
    warnings.simplefilter("ignore")
    import cv2
    from fer.fer import FER  # `from fer import FER`, as fer's README says, fails in 25.10.3
    import fer as fer_package

    logging.getLogger("fer").setLevel(logging.WARNING)
    job = json.load(open(sys.argv[1]))
    detector = FER()
    out = {"fer_version": fer_package.__version__, "cv2_version": cv2.__version__, "sets": {}}
    if job["classify"]:
        faces = np.load(job["faces"])[..., 0]
        x = np.stack([cv2.resize(face, (64, 64)) for face in faces]).astype("float32")
        x = (x / 255.0 - 0.5) * 2.0  # fer's own preprocessing of a detected face
        start = time.perf_counter()
        probs = np.asarray(detector._classify_emotions(x))
        out["classify"] = {"pred": probs.argmax(1).tolist(), "seconds": time.perf_counter() - start}
    for name, photos in job["sets"].items():
        images = [cv2.imread(path) for path in photos]
        for image in images[: job["warmup"]]:
            detector.detect_emotions(image)
        times, found = [], []
        for image in images:
            start = time.perf_counter()
            result = detector.detect_emotions(image)
            times.append((time.perf_counter() - start) * 1e3)
            labels = list(result[0]["emotions"]) if result else []
            found.append([[*map(int, r["box"]), labels.index(max(r["emotions"], key=r["emotions"].get))]
                          for r in result])
        out["sets"][name] = {"times_ms": times, "found": found}
        times = []
        for image in images:  # the face detector alone, as detect_emotions calls it
            start = time.perf_counter()
            detector.find_faces(image, bgr=True, gray_img=cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
            times.append((time.perf_counter() - start) * 1e3)
        out["detect_only"] = {**out.get("detect_only", {}), name: {"times_ms": times, "found": [[]] * len(images)}}
    json.dump(out, open(sys.argv[2], "w"))
    """
)


def make_photos(faces, labels, folder, n_photos, per_photo, face_size, seed):
    """Write `n_photos` JPEGs with `per_photo` pasted faces each; [(path, [(x, y, size, label), ...])]."""
    rng = np.random.default_rng(seed)
    cols, rows = (1, 1) if per_photo == 1 else (4, 2)
    cell = int(face_size * 1.6)
    width, height = max(cols * cell, 480), max(rows * cell, 360)
    photos, used = [], 0
    for i in range(n_photos):
        yy, xx = np.mgrid[0:height, 0:width]
        background = 90 + 60 * (xx / width) + 30 * np.sin(yy / height * np.pi) + rng.normal(0, 6, (height, width))
        photo = np.clip(background, 0, 255).astype(np.uint8)
        placed = []
        for k in range(per_photo):
            face, label = faces[used], int(labels[used])
            used += 1
            big = np.asarray(Image.fromarray(face[..., 0]).resize((face_size, face_size), Image.Resampling.BICUBIC))
            if per_photo == 1:
                x, y = int(rng.integers(0, width - face_size)), int(rng.integers(0, height - face_size))
            else:
                col, row = k % cols, k // cols
                slack = cell - face_size
                x, y = col * cell + int(rng.integers(0, slack)), row * cell + int(rng.integers(0, slack))
            photo[y : y + face_size, x : x + face_size] = big
            placed.append((x, y, face_size, label))
        path = folder / f"photo{per_photo}_{i:03d}.jpg"
        Image.fromarray(photo).convert("RGB").save(path, quality=92)
        photos.append((str(path), placed))
    return photos


def match(found, placed):
    """(faces matched, correct labels): a found box matches the pasted face containing its centre."""
    matched = correct = 0
    for x, y, size, label in placed:
        for box in found:
            cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
            if x <= cx < x + size and y <= cy < y + size and 0.5 * size <= box[2] <= 2 * size:
                matched += 1
                correct += int(box[4] == label)
                break
    return matched, correct


def fer_keras_pipeline(model, detector=None):
    """(`rgb -> [(x, y, w, h, class index), ...]`, which API it uses, its face detector alone)."""
    from fer_keras.inference.api import EmotionRecognizer

    options = {} if detector is None else {"detector": detector}
    recognizer = EmotionRecognizer(**options) if model is None else EmotionRecognizer.load(model, **options)

    def run(rgb):
        return [[*face.box, CLASS_NAMES.index(face.emotion)] for face in recognizer.detect(rgb)]

    def detect(rgb):
        return [[*map(int, box), -1] for box in recognizer.detector(rgb)]

    how = "fer_keras.inference.api.EmotionRecognizer" + (".load(MODEL)" if model else "() (shipped model)")
    return run, f"{how}, detector {type(recognizer.detector).__name__}", detect


def time_fer_keras(run, sets, warmup):
    """{set: {"times_ms", "found"}} for one round."""
    out = {}
    for name, photos in sets.items():
        images = [np.asarray(Image.open(path).convert("RGB")) for path, _ in photos]
        for image in images[:warmup]:
            run(image)
        times, found = [], []
        for image in images:
            start = time.perf_counter()
            result = run(image)
            times.append((time.perf_counter() - start) * 1e3)
            found.append(result)
        out[name] = {"times_ms": times, "found": found}
    return out


def time_fer(fer_python, sets, faces_file, warmup, classify, work):
    """One round of fer in its own environment (a subprocess); its JSON result."""
    job, result = work / "fer_job.json", work / "fer_result.json"
    job.write_text(json.dumps({"sets": {name: [p for p, _ in photos] for name, photos in sets.items()},
                               "faces": str(faces_file), "warmup": warmup, "classify": classify}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([fer_python, "-c", FER_SCRIPT, str(job), str(result)], env=env, cwd=work,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"fer failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.read_text())


def summarise(rounds, sets):
    """{set: {p50_ms, p95_ms, faces_per_photo, detected, accuracy_detected}} over rounds (medians)."""
    out = {}
    for name, photos in sets.items():
        p50 = statistics.median(float(np.percentile(r[name]["times_ms"], 50)) for r in rounds)
        p95 = statistics.median(float(np.percentile(r[name]["times_ms"], 95)) for r in rounds)
        found = rounds[0][name]["found"]
        scores = [match(f, placed) for f, (_, placed) in zip(found, photos)]
        pasted = sum(len(placed) for _, placed in photos)
        matched, correct = map(sum, zip(*scores))
        out[name] = {"p50_ms": p50, "p95_ms": p95, "faces_found_per_photo": float(np.mean([len(f) for f in found])),
                     "pasted": pasted, "matched": matched,
                     "pasted_faces_detected": matched / pasted, "accuracy_on_detected": correct / max(matched, 1),
                     "rounds_p50_ms": [float(np.percentile(r[name]["times_ms"], 50)) for r in rounds]}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help="fer_keras model (.keras, run folder, SavedModel, .tflite, or 'shipped'); repeat to "
                             "compare several (default: the shipped model)")
    parser.add_argument("--detector", help="fer_keras's face detector (a name in fer_keras.inference.detectors.DETECTORS; "
                                           "default: the API's default)")
    parser.add_argument("--data", help="FER2013 CSV with PublicTest rows (default: FER2013_CSV / ../shared/data)")
    parser.add_argument("--fer-python", default=DEFAULT_FER_PYTHON,
                        help="python of the environment where fer is installed ('' to skip fer)")
    parser.add_argument("--photos", type=int, default=24, help="photos per set (1-face and 8-face)")
    parser.add_argument("--face-size", type=int, default=144)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--work", help="folder for the photos (default: a temporary folder)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)

    data_path = args.data or find_real_data()
    if data_path is None:
        parser.error("no FER2013 data: pass --data or set FER2013_CSV")
    public = split_data(load_fer2013(data_path))["val"]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-photo-"))
    work.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(len(public))
    faces, labels = public.images[order], public.labels[order]
    sets, start = {}, 0
    for per_photo in FACES_PER_PHOTO:
        n = args.photos * per_photo
        part = slice(start, start + n)
        sets[f"{per_photo} face{'s' * (per_photo > 1)}"] = make_photos(
            faces[part], labels[part], work, args.photos, per_photo, args.face_size, seed=per_photo)
        start += n
    (work / "manifest.json").write_text(json.dumps(
        {name: [{"photo": path, "faces": [dict(zip(("x", "y", "size", "label"), face)) for face in placed]}
                for path, placed in photos] for name, photos in sets.items()}, indent=1))
    faces_file = work / "publictest_faces.npy"
    np.save(faces_file, public.images)
    print(f"photos: {work} ({args.photos} per set, faces {args.face_size} px, from {len(public)} PublicTest faces "
          f"of {data_path})")

    pipelines = {}
    args.model = [None if m == "shipped" else m for m in args.model or ["shipped"]]
    for model in args.model:
        run, how, detect = fer_keras_pipeline(model, args.detector)
        pipelines[f"fer_keras {Path(model).name if model else 'shipped'}"] = run
        print(f"fer_keras: {how}")
    pipelines["fer_keras face detector alone"] = detect
    use_fer = bool(args.fer_python)
    if use_fer and not Path(args.fer_python).exists():
        print(f"fer: skipped, {args.fer_python} does not exist")
        use_fer = False

    results, accuracy = {}, {}
    from fer_keras.inference.predictor import Predictor

    for model in args.model:
        if model is None:
            from fer_keras import pretrained

        probs = Predictor.load(model or pretrained.model_path()).predict_proba(public.images)
        name = f"fer_keras {Path(model).name if model else 'shipped'}"
        accuracy[name] = float((probs.argmax(1) == public.labels).mean())
    rounds = {name: [] for name in pipelines}
    fer_rounds = []
    for r in range(args.rounds):
        for name, run in pipelines.items():
            rounds[name].append(time_fer_keras(run, sets, args.warmup))
        if use_fer:
            fer_rounds.append(time_fer(args.fer_python, sets, faces_file, args.warmup, r == 0, work))
        print(f"round {r + 1}/{args.rounds} done")
    for name in pipelines:
        results[name] = summarise(rounds[name], sets)
    if use_fer:
        results["fer (Haar + its int8 .tflite)"] = summarise([f["sets"] for f in fer_rounds], sets)
        results["fer face detector alone"] = summarise([f["detect_only"] for f in fer_rounds], sets)
        pred = np.asarray(fer_rounds[0]["classify"]["pred"])
        accuracy["fer (Haar + its int8 .tflite)"] = float((pred == public.labels).mean())
        print(f"fer {fer_rounds[0]['fer_version']} (OpenCV {fer_rounds[0]['cv2_version']}) via {args.fer_python}")

    print("\n| pipeline | photo | p50 ms/photo | p95 ms/photo | pasted faces found | accuracy on found "
          "| classifier accuracy, all PublicTest faces |")
    detectors_only = ("fer_keras face detector alone", "fer face detector alone")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, by_set in results.items():
        for set_name, r in by_set.items():
            acc = accuracy.get(name)
            found = "" if name in detectors_only else f"{r['pasted_faces_detected']:.0%} of {r['pasted']}"
            correct = "" if name in detectors_only else f"{r['accuracy_on_detected']:.1%} of {r['matched']}"
            print(f"| {name} | {set_name} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {found} | {correct} | "
                  f"{'' if acc is None else f'{acc:.2%}'} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "data": str(data_path), "photos_per_set": args.photos, "face_size": args.face_size,
            "rounds": args.rounds, "cpu_count": os.cpu_count(), "results": results, "classifier_accuracy": accuracy,
            "python": sys.version.split()[0],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
