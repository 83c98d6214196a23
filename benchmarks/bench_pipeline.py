"""Input-pipeline cost and bf16 gain: training steps/s of the full tf.data pipeline vs one batch in memory.

    python benchmarks/bench_pipeline.py [--model deep_cnn] [--batch-size 128] [--steps 60] [--data PATH]

Target (issue 4): the full pipeline with the `strong` augmentation keeps at least 95% of the steps/s of
the same model fed one in-memory batch repeatedly. Also prints the mixed_bfloat16 / float32 ratio.
Runs each measurement in a fresh subprocess so dtype policies and thread pools do not leak.
"""

import argparse
import json
import subprocess
import sys
import time


def measure(model_name, batch_size, steps, precision, feed, data):
    """Steps per second of `model.fit` for `steps` steps after one warm-up epoch (run in-process)."""
    import keras
    import tensorflow as tf

    from fer_keras.data.augment import build_augmenter
    from fer_keras.data import default_data, load_fer2013, make_dataset
    from fer_keras.models import build_model

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(precision)
    fer = load_fer2013(data or default_data())
    n = batch_size * steps
    images, labels = fer.images[:n], fer.labels[:n]
    if feed == "pipeline":
        ds = make_dataset(
            images, labels, batch_size=batch_size, training=True, augment=build_augmenter("strong")
        )
    else:
        x = tf.constant(images[:batch_size].astype("float32"))
        y = tf.one_hot(labels[:batch_size], 7)
        ds = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    model = build_model(model_name)
    model.compile(
        keras.optimizers.AdamW(1e-3),
        keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(ds, epochs=1, verbose=0)  # warm-up: tracing, oneDNN primitive caches, tf.data cache
    start = time.perf_counter()
    model.fit(ds, epochs=2, verbose=0)
    return 2 * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deep_cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--data", default=None, help="FER2013 CSV (default: synthetic data)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        precision, feed = args.child.split(",")
        rate = measure(args.model, args.batch_size, args.steps, precision, feed, args.data)
        print(json.dumps(rate))
        return

    def run(precision, feed):
        cmd = [sys.executable, __file__, "--model", args.model, "--batch-size",
               str(args.batch_size), "--steps", str(args.steps), "--child", f"{precision},{feed}"]
        if args.data:
            cmd += ["--data", args.data]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    rates = {(p, f): run(p, f) for p in ("mixed_bfloat16", "float32") for f in ("memory", "pipeline")}
    print(f"model {args.model}, batch {args.batch_size}, {args.steps} steps/epoch, 2 epochs timed")
    print(f"{'precision':<16}{'in-memory steps/s':>20}{'pipeline steps/s':>18}{'ratio':>8}")
    for p in ("mixed_bfloat16", "float32"):
        mem, pipe = rates[(p, "memory")], rates[(p, "pipeline")]
        print(f"{p:<16}{mem:>20.2f}{pipe:>18.2f}{pipe / mem:>8.3f}")
    bf16 = rates[("mixed_bfloat16", "pipeline")] / rates[("float32", "pipeline")]
    print(f"bf16 / float32 speed (full pipeline): {bf16:.2f}x")


if __name__ == "__main__":
    main()
