"""TFLite variants of a trained run against its SavedModel and Keras model: file size, PublicTest
accuracy, and per-face latency (one face at a time, warm, p50 and p95) on this CPU.

Every model kind is served through `fer_keras.inference.predictor.Predictor` (what `predict` and the API
use). The model is snapshotted first (a run still training may replace `model.keras` midway); the
TFLite files (int8 calibrated on Training faces of `--data`) and, unless the run has an up-to-date
one, the SavedModel are written into `--work`. Latency: `--faces` single-face calls per model and
round, after a warm-up, models taking turns; `--rounds` rounds, and the table gives the median over
rounds of each round's p50 and p95 (shared cores make single rounds noisy). With `--fer-tflite`
(fer's `emotion_model_quantized.tflite`, from an environment where `fer` is installed) fer's
classifier is measured the same way, fed as `fer` feeds it (64x64 bilinear, scaled to [-1, 1]).

    PYTHONPATH=. python benchmarks/bench_tflite.py RUN [--data fer2013.csv.gz] [--work DIR]
        [--rounds 5] [--faces 300] [--threads 1] [--fer-tflite PATH] [--json OUT.json]
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from fer_keras.modelio import tflite  # noqa: E402
from fer_keras.data import load_fer2013, split_data  # noqa: E402
from fer_keras.modelio.export import export_savedmodel  # noqa: E402
from fer_keras.core.paths import find_real_data  # noqa: E402
from fer_keras.inference.predictor import Predictor  # noqa: E402
from fer_keras.modelio.saving import is_savedmodel, load_keras_model, resolve_model_file  # noqa: E402

FER_SIZE = 64  # fer's classifier input


def checkpoint_epoch(run_dir):
    """(1-based epoch of the best val_accuracy so far, epochs done) from history.csv, or (None, None)."""
    history = Path(run_dir) / "history.csv"
    if not history.exists():
        return None, None
    with open(history) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None, 0
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    return int(best["epoch"]) + 1, len(rows)


def fer_predictor(path, threads):
    """fer's quantised classifier as a predictor of 48x48 0-255 faces: 64x64 bilinear, [-1, 1]."""
    import cv2

    interpreter = tflite.interpreter_class()(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    batch = [None]

    def predict(faces):
        x = np.stack([cv2.resize(face[..., 0], (FER_SIZE, FER_SIZE)) for face in faces]).astype(np.float32)
        x = ((x / 255.0 - 0.5) * 2.0)[..., None]
        if batch[0] != len(x):
            interpreter.resize_tensor_input(source["index"], x.shape)
            interpreter.allocate_tensors()
            batch[0] = len(x)
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"]).copy()

    return predict


def latencies(predictors, faces, rounds, n):
    """{name: [(p50 ms, p95 ms) per round]}: one face per call, warm, the models taking turns."""
    out = {name: [] for name in predictors}
    for name, predict in predictors.items():
        for face in faces[:20]:  # warm-up: first-call allocations, tracing
            predict(face[None])
    for _ in range(rounds):
        for name, predict in predictors.items():
            times = []
            for face in faces[:n]:
                start = time.perf_counter()
                predict(face[None])
                times.append((time.perf_counter() - start) * 1e3)
            out[name].append((float(np.percentile(times, 50)), float(np.percentile(times, 95))))
    return out


def size_of(path):
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def other_load():
    """The processes using the CPU besides this one (ps), to say what shared the cores."""
    try:
        ps = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    except OSError:
        return []
    lines = [line.strip() for line in ps.splitlines()[1:] if line.split(None, 1)[0] != str(os.getpid())]
    return [line[:160] for line in lines if float(line.split()[1]) >= 5.0][:8]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder (its model.keras) or a .keras file")
    parser.add_argument("--data", help="FER2013 CSV: PublicTest for accuracy, Training for int8 calibration "
                                       "(default: FER2013_CSV / ../shared/data, else the run's data)")
    parser.add_argument("--work", help="folder for the snapshot and exports (default: a temporary folder)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--faces", type=int, default=300, help="single-face calls per model and round")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (TFLite)")
    parser.add_argument("--fer-tflite", help="fer's emotion_model_quantized.tflite, to measure alongside")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)

    model_file = resolve_model_file(args.run)
    epoch, epochs_done = checkpoint_epoch(model_file.parent)
    config = model_file.parent / "config.json"
    run_data = json.loads(config.read_text()).get("data") if config.exists() else None
    data_path = args.data or find_real_data() or run_data
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-tflite-"))
    work.mkdir(parents=True, exist_ok=True)
    snapshot = work / "model.keras"
    shutil.copy2(model_file, snapshot)  # the checkpoint as it is now
    model = load_keras_model(snapshot)
    print(f"model: {model_file} ({model.name}, {model.count_params():,} parameters), best checkpoint of "
          f"epoch {epoch} of {epochs_done} done so far (history.csv); snapshot {snapshot}")

    data = load_fer2013(data_path)
    public = split_data(data)["val"]
    print(f"data: {data_path}; PublicTest {len(public)} faces")

    savedmodel = model_file.parent / "savedmodel"
    if not (is_savedmodel(savedmodel) and savedmodel.stat().st_mtime >= model_file.stat().st_mtime):
        savedmodel = export_savedmodel(model, work / "savedmodel", model_name=model.name)
    paths = {"Keras (.keras)": snapshot, "SavedModel": savedmodel}
    calibration = tflite.calibration_faces(data_path)
    for quantize in tflite.QUANTIZATIONS:
        start = time.perf_counter()
        paths[f"TFLite {quantize}"] = tflite.export_tflite(model, work, quantize, calibration)
        print(f"TFLite {quantize}: converted in {time.perf_counter() - start:.1f} s")
    predictors = {}
    for name, path in paths.items():
        predictors[name] = tflite.load_tflite(path, args.threads) if name.startswith("TFLite") else Predictor.load(path).predict_proba
    if args.fer_tflite:
        paths["fer (its int8 .tflite)"] = Path(args.fer_tflite)
        predictors["fer (its int8 .tflite)"] = fer_predictor(args.fer_tflite, args.threads)

    faces = public.images.astype(np.float32)
    results = {}
    reference = None
    for name, predict in predictors.items():
        probs = Predictor(predict).predict_proba(faces, batch_size=256)
        reference = probs if reference is None else reference
        results[name] = {
            "size_bytes": size_of(paths[name]),
            "publictest_accuracy": float((probs.argmax(1) == public.labels).mean()),
            "agreement_with_keras": float((probs.argmax(1) == reference.argmax(1)).mean()),
        }
    print(f"latency: {args.rounds} rounds x {args.faces} single-face calls per model (TFLite threads: {args.threads})")
    shuffled = faces[np.random.default_rng(0).permutation(len(faces))]
    for name, rounds in latencies(predictors, shuffled, args.rounds, args.faces).items():
        results[name].update(
            p50_ms=statistics.median(r[0] for r in rounds), p95_ms=statistics.median(r[1] for r in rounds),
            rounds_ms=rounds,
        )
    load = other_load()

    print("\n| variant | size | PublicTest accuracy | agrees with Keras | p50 ms/face | p95 ms/face |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['size_bytes'] / 1024:,.0f} KiB | {r['publictest_accuracy']:.2%} | "
              f"{r['agreement_with_keras']:.2%} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} |")
    print("\nother processes using the CPU meanwhile:", *load, sep="\n  ")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": str(model_file), "checkpoint_epoch": epoch, "epochs_done": epochs_done,
            "data": str(data_path), "publictest_faces": len(public), "rounds": args.rounds, "faces": args.faces,
            "threads": args.threads, "cpu_count": os.cpu_count(), "other_load": load, "results": results,
            "python": sys.version.split()[0],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
