"""Training throughput (images/s) of deep_cnn, resnet_fer and mini_xception in float32 and bfloat16:
fer_keras as landed (Keras' own batch norm) against now (TensorFlow's fused batch norm), timed
interleaved in one process, beside the same networks in PyTorch (eager, channels_last, bfloat16
autocast; torch.compile with --compile), and the default recipe end to end with its real input pipeline.

Per row: FLOPs per training image (3x the forward pass: forward, input gradient, weight gradient;
2 FLOPs per MAC), achieved GFLOP/s, and the share of op time in convolutions (a TF profiler trace of
one epoch: Conv2D* and DepthwiseConv2d* op time over all op time). Runs in a few minutes by default;
--steps, --repeats and --batch-sizes for more. Writes benchmarks/results/bench_train.json.

    pip install -r benchmarks/requirements.txt   # optional: the PyTorch column
    python benchmarks/bench_train.py [--models deep_cnn] [--batch-sizes 64,128,256] [--recipe-data FER.csv.gz]
"""

import argparse
import collections
import glob
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_keras.core.io import write_json  # noqa: E402
from fer_keras.models import build_model  # noqa: E402
from fer_keras.models.layers import FusedBatchNormalization  # noqa: E402
from fer_keras.models.profile import count_macs  # noqa: E402
from fer_keras.training.precision import machine_summary  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_train.json"
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
CONV_OPS = ("Conv2D", "DepthwiseConv2d")


def keras_model(name, policy, fused):
    """`name` compiled as the default recipe compiles (AdamW, cross-entropy on logits); `fused=False`
    gives the landed path (Keras' own batch norm computation)."""
    keras.mixed_precision.set_global_policy(policy)
    model = build_model(name)
    for layer in model.layers:
        if isinstance(layer, FusedBatchNormalization):
            layer.fused = fused
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    return model


def random_batches(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 48, 48, 1)).astype("float32")
    return x, keras.utils.to_categorical(rng.integers(0, 7, n), 7)


def time_interleaved(runners, repeats):
    """{key: [images/s per repeat]}, each runner `() -> (images, seconds)` called in turn, `repeats` rounds."""
    rates = {key: [] for key in runners}
    for _ in range(repeats):
        for key, run in runners.items():
            images, seconds = run()
            rates[key].append(images / seconds)
    return rates


def keras_runner(model, x, y, batch_size):
    model.fit(x[: 2 * batch_size], y[: 2 * batch_size], batch_size=batch_size, epochs=1, verbose=0)  # trace, warm

    def run():
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        return len(x), time.perf_counter() - start

    return run


def conv_share(model, x, y, batch_size):
    """Share of TF op time in convolutions (forward and both gradients) over one epoch, from a profiler trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    times = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if "/" in name and ":" in name:  # "scope/op_name:OpType": a TF op
                    times[name.rsplit(":", 1)[1]] += event.duration_ps
    total = sum(times.values())
    conv = sum(t for op, t in times.items() if any(c in op for c in CONV_OPS))
    return round(conv / total, 3) if total else None


def row(rates, flops):
    median = statistics.median(rates)
    return {"images_per_second": round(median, 1), "runs": [round(r, 1) for r in rates],
            "spread": round((max(rates) - min(rates)) / median, 3), "gflops_per_second": round(median * flops / 1e9, 1)}


def bench_keras(args, name, precision, batch_size, x, y):
    """Landed vs now for one network, precision and batch size, interleaved."""
    policy = POLICIES[precision]
    models = {"landed": keras_model(name, policy, fused=False), "now": keras_model(name, policy, fused=None)}
    flops = 6 * count_macs(models["now"])
    runners = {k: keras_runner(m, x, y, batch_size) for k, m in models.items()}
    rates = time_interleaved(runners, args.repeats)
    result = {k: row(r, flops) for k, r in rates.items()}
    if args.conv_share:
        for key, model in models.items():
            result[key]["conv_share"] = conv_share(model, x, y, batch_size)
    result["speedup"] = round(result["now"]["images_per_second"] / result["landed"]["images_per_second"], 2)
    return flops, result


def bench_torch(args, name, precision, batch_size, x, y, flops):
    """The same network in PyTorch (eager, channels_last), bfloat16 by CPU autocast; None without torch."""
    import torch

    import torch_models

    torch.manual_seed(0)
    model = torch_models.MODELS[name]().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    step_model = torch.compile(model) if args.compile else model
    images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    labels = torch.from_numpy(y.argmax(1))
    batches = [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(x), batch_size)]

    def step(xb, yb):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            logits = step_model(xb / 127.5 - 1)
        loss = loss_fn(logits.float(), yb)
        loss.backward()
        optimizer.step()

    model.train()
    for xb, yb in batches[:2]:
        step(xb, yb)

    def run():
        start = time.perf_counter()
        for xb, yb in batches:
            step(xb, yb)
        return len(x), time.perf_counter() - start

    params = sum(p.numel() for p in model.parameters())
    return {**row(time_interleaved({"torch": run}, args.repeats)["torch"], flops), "trainable_params": params,
            "compiled": bool(args.compile)}


def bench_recipe(args):
    """The default recipe end to end (its tf.data pipeline, augmentation, metrics, AdamW schedule):
    images/s of `fit` epochs, landed vs now, interleaved."""
    from fer_keras.training import parts
    from fer_keras.training.config import resolve_config

    overrides = {"recipe": "default", "data": args.recipe_data, "limit": args.recipe_limit, "epochs": 1}
    cfg = resolve_config(overrides={k: v for k, v in overrides.items() if v is not None})
    splits = parts.load_splits(cfg)
    train_ds, _, fit_kwargs = parts.make_datasets(cfg, splits)
    runners = {}
    for key, fused in (("landed", False), ("now", None)):
        model, _ = parts.build_compiled_model(cfg, parts.steps_per_epoch(cfg, splits), splits["train"].labels)
        for layer in _all_layers(model):
            if isinstance(layer, FusedBatchNormalization):
                layer.fused = fused
        model.fit(train_ds.take(2), epochs=1, verbose=0, class_weight=fit_kwargs["class_weight"])

        def run(model=model):
            start = time.perf_counter()
            model.fit(train_ds, epochs=1, verbose=0, class_weight=fit_kwargs["class_weight"])
            return len(splits["train"]), time.perf_counter() - start

        runners[key] = run
    rates = time_interleaved(runners, args.repeats)
    flops = 6 * count_macs(build_model(cfg["model"], **cfg["model_args"]))
    result = {k: row(r, flops) for k, r in rates.items()}
    result.update(train_images=len(splits["train"]), precision=keras.mixed_precision.global_policy().name,
                  speedup=round(result["now"]["images_per_second"] / result["landed"]["images_per_second"], 2))
    return result


def _all_layers(layer):
    yield layer
    for sub in getattr(layer, "layers", ()):
        yield from _all_layers(sub)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="deep_cnn,resnet_fer,mini_xception")
    parser.add_argument("--precisions", default="bfloat16,float32")
    parser.add_argument("--batch-sizes", default="128", help="comma-separated; each adds rows (scaling study)")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per measurement")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--compile", action="store_true", help="torch.compile the PyTorch models")
    parser.add_argument("--conv-share", action="store_true", help="profile one epoch per model for the conv share")
    parser.add_argument("--recipe-data", help="FER2013 CSV for the default recipe row (default: the synthetic set)")
    parser.add_argument("--recipe-limit", type=int, default=None, help="rows of --recipe-data to use")
    parser.add_argument("--no-recipe", action="store_true", help="skip the default recipe row")
    parser.add_argument("--json", type=Path, default=RESULTS)
    return parser.parse_args()


def main():
    args = parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    torch_ok = not args.no_torch
    if torch_ok:
        try:
            import torch

            torch.set_num_threads(os.cpu_count())
        except ImportError:
            print("PyTorch is not installed: skipping the PyTorch column (pip install -r benchmarks/requirements.txt)")
            torch_ok = False
    results = {"machine": machine_summary(), "tensorflow": tf.__version__, "keras": keras.__version__,
               "torch": torch.__version__ if torch_ok else None, "command": " ".join(sys.argv), "rows": []}
    print(f"{results['machine']}; TF {tf.__version__}, Keras {keras.__version__}"
          + (f", PyTorch {results['torch']}" if torch_ok else ""))
    print(f"{'model':14} {'precision':9} {'batch':>5} {'GFLOP/img':>9} {'landed':>7} {'now':>7} {'x':>5} "
          f"{'torch':>7} {'now GFLOP/s':>11} {'conv share (landed/now)':>24}")
    for batch_size in map(int, args.batch_sizes.split(",")):
        x, y = random_batches(batch_size * args.steps)
        for name in args.models.split(","):
            for precision in args.precisions.split(","):
                flops, result = bench_keras(args, name, precision, batch_size, x, y)
                torch_result = bench_torch(args, name, precision, batch_size, x, y, flops) if torch_ok else None
                results["rows"].append({"model": name, "precision": precision, "batch_size": batch_size,
                                        "flops_per_image": flops, **result, "torch": torch_result})
                share = "/".join(str(result[k].get("conv_share", "-")) for k in ("landed", "now"))
                print(f"{name:14} {precision:9} {batch_size:5d} {flops / 1e9:9.3f} "
                      f"{result['landed']['images_per_second']:7.0f} {result['now']['images_per_second']:7.0f} "
                      f"{result['speedup']:5.2f} {torch_result['images_per_second'] if torch_result else '-':>7} "
                      f"{result['now']['gflops_per_second']:11.1f} {share:>24}", flush=True)
    if not args.no_recipe:
        recipe = bench_recipe(args)
        results["default_recipe"] = recipe
        print(f"default recipe end to end ({recipe['train_images']} training images, {recipe['precision']}): "
              f"landed {recipe['landed']['images_per_second']:.0f}, now {recipe['now']['images_per_second']:.0f} "
              f"images/s ({recipe['speedup']}x)")
    write_json(args.json, results)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
