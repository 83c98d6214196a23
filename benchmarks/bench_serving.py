"""Serving speed: the exported SavedModel against the Keras model it came from, on this CPU.

Batch throughput (images/s at `--batch-size` over `--n` images, best of `--repeats`) and
single-image latency (p50/p95 over `--calls` calls) for: the SavedModel's `serving_default`,
`model.predict`, a direct `model(x, training=False)` call, and `model.predict_on_batch`.
Untrained weights: speed does not depend on them.

    PYTHONPATH=. python benchmarks/bench_serving.py [--model resnet_fer] [--precision float32|mixed_bfloat16]
        [--n 2048] [--batch-size 256] [--calls 200] [--repeats 2]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fer_keras.constants import IMAGE_SHAPE  # noqa: E402
from fer_keras.modelio.export import export_savedmodel  # noqa: E402
from fer_keras.models import build_model  # noqa: E402

SAVEDMODEL = "SavedModel serving_default"
WHOLE_ARRAY = "keras model.predict"


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(calls, images, batch_size, repeats, n_single):
    """{name: (images/s, p50 ms, p95 ms)}; paths take turns so that load on a shared CPU hits all alike.

    Throughput is the best of `repeats` passes over `images` (whole-array `predict` for
    `keras model.predict`, batches of `batch_size` for the others); latency is over `n_single` calls.
    """
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    passes = {name: (lambda call=call: [call(b) for b in batches]) for name, call in calls.items()}
    passes[WHOLE_ARRAY] = lambda: calls[WHOLE_ARRAY](images)
    for call in calls.values():
        call(batches[0])  # warm-up: tracing and first-call allocations
    batch_times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, run in passes.items():
            batch_times[name].append(_timed(run))
    single = {name: [] for name in calls}
    for _ in range(n_single):
        for name, call in calls.items():
            single[name].append(_timed(lambda: call(images[:1])) * 1e3)
    return {
        name: (len(images) / min(batch_times[name]), np.percentile(single[name], 50), np.percentile(single[name], 95))
        for name in calls
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet_fer")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32")
    args = parser.parse_args()

    keras.mixed_precision.set_dtype_policy(args.precision)
    model = build_model(args.model)
    images = np.random.default_rng(0).integers(0, 256, (args.n, *IMAGE_SHAPE)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        export_savedmodel(model, f"{tmp}/saved")
        serve = tf.saved_model.load(f"{tmp}/saved").signatures["serving_default"]
        calls = {
            SAVEDMODEL: lambda x: serve(image=tf.constant(x))["probabilities"].numpy(),
            WHOLE_ARRAY: lambda x: model.predict(x, batch_size=args.batch_size, verbose=0),
            "keras model(x, training=False)": lambda x: model(x, training=False).numpy(),
            "keras predict_on_batch": model.predict_on_batch,
        }
        results = measure(calls, images, args.batch_size, args.repeats, args.calls)

    print(f"model {args.model} ({model.count_params():,} params, {args.precision}), {os.cpu_count()} CPUs, "
          f"TF {tf.__version__}")
    print(f"batch throughput: {args.n} images in batches of {args.batch_size}, best of {args.repeats}; "
          f"single-image latency over {args.calls} calls")
    print(f"{'path':32} {'images/s':>10} {'p50 ms':>8} {'p95 ms':>8}")
    for name, (rate, p50, p95) in results.items():
        print(f"{name:32} {rate:10.0f} {p50:8.2f} {p95:8.2f}")
    (saved_rate, saved_p50, _), (predict_rate, _, _) = results[SAVEDMODEL], results[WHOLE_ARRAY]
    print(f"SavedModel / model.predict batch throughput: {saved_rate / predict_rate:.2f}x "
          f"(target >= 1); SavedModel single-image p50 {saved_p50:.2f} ms (target < 5 ms)")


if __name__ == "__main__":
    main()
