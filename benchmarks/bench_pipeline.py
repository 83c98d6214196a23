"""Input-pipeline cost, where augmentation runs, and bf16 gain: training steps/s of one model fed three ways.

    python benchmarks/bench_pipeline.py [--model deep_cnn] [--preset light] [--batch-size 128] [--steps 60]
                                        [--precisions mixed_bfloat16 float32] [--repeats 2] [--data PATH]

Feeds: `memory`, one in-memory batch repeatedly without augmentation (the ceiling); `model`, the training
path: the tf.data pipeline with the preset's `Augmentation` in the model's training step (`augmented`);
`tf.data`, the same layer applied in the pipeline's batch map instead (where augmentation ran before).
Targets: `model` keeps at least 95% of `memory`'s steps/s (issue 4) and is no slower than `tf.data` on a
CPU (issue 24). Each measurement runs in a fresh subprocess so dtype policies and thread pools do not
leak; the feeds are interleaved, their order reversed every other repeat, and the median is reported,
since other processes may share the CPU.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

FEEDS = ("memory", "model", "tf.data")


def measure(model_name, preset, batch_size, steps, precision, feed, data):
    """Steps per second of `model.fit` for 2 epochs of `steps` steps after one warm-up epoch (in-process)."""
    import keras
    import tensorflow as tf

    from fer_keras.data import default_data, load_fer2013, make_dataset
    from fer_keras.data.augment import Augmentation, augmented
    from fer_keras.models import build_model

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(precision)
    fer = load_fer2013(data or default_data())
    n = batch_size * steps
    images, labels = fer.images[:n], fer.labels[:n]
    model = build_model(model_name)
    if feed == "memory":
        x = tf.constant(images[:batch_size].astype("float32"))
        y = tf.one_hot(labels[:batch_size], 7)
        ds = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    elif feed == "model":
        ds = make_dataset(images, labels, batch_size=batch_size, training=True)
        model = augmented(model, preset)
    else:
        augmentation = Augmentation(preset)
        ds = make_dataset(images, labels, batch_size=batch_size, training=True,
                          mix=lambda x, y: (augmentation(x, training=True), y))
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
    parser.add_argument("--preset", default="light", help="augmentation preset (default: the default recipe's)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--precisions", nargs="+", default=["mixed_bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each feed and precision")
    parser.add_argument("--data", default=None, help="FER2013 CSV (default: synthetic data)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        precision, feed = args.child.split(",")
        print(json.dumps(measure(args.model, args.preset, args.batch_size, args.steps, precision, feed, args.data)))
        return

    def run(precision, feed):
        cmd = [sys.executable, __file__, "--model", args.model, "--preset", args.preset, "--batch-size",
               str(args.batch_size), "--steps", str(args.steps), "--child", f"{precision},{feed}"]
        if args.data:
            cmd += ["--data", args.data]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    rates = {(p, f): [] for p in args.precisions for f in FEEDS}
    for repeat in range(args.repeats):
        for p in args.precisions:
            for f in FEEDS if repeat % 2 == 0 else FEEDS[::-1]:
                rates[(p, f)].append(run(p, f))
                print(f"repeat {repeat + 1}, {p}, {f}: {rates[(p, f)][-1]:.3f} steps/s", flush=True)
    rate = {key: statistics.median(values) for key, values in rates.items()}
    print(f"model {args.model}, preset {args.preset}, batch {args.batch_size}, {args.steps} steps/epoch, "
          f"2 epochs timed, median of {args.repeats}")
    print(f"{'precision':<16}{'memory':>10}{'model':>10}{'tf.data':>10}{'model/memory':>14}{'model/tf.data':>15}")
    for p in args.precisions:
        mem, model, host = (rate[(p, f)] for f in FEEDS)
        print(f"{p:<16}{mem:>10.3f}{model:>10.3f}{host:>10.3f}{model / mem:>14.3f}{model / host:>15.3f}")
    if {"mixed_bfloat16", "float32"} <= set(args.precisions):
        bf16 = rate[("mixed_bfloat16", "model")] / rate[("float32", "model")]
        print(f"bf16 / float32 speed (training path): {bf16:.2f}x")


if __name__ == "__main__":
    main()
