"""Decode speed, side by side in one run: the notebooks' pandas + per-row split vs `load_fer2013`.

    python benchmarks/bench_decode.py [PATH] [--repeat N]

PATH defaults to the real `fer2013.csv.gz` (`$FER2013_CSV` or `../shared/data/`). "cold" decodes
with an empty cache; "warm" is a second load, answered by the cache. Each time is the best of N.
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import pandas as pd

from fer_keras.data import load_fer2013
from fer_keras.core.paths import find_real_data


def naive(path):
    """The original notebooks' decoding."""
    frame = pd.read_csv(path)
    return np.stack([np.array(s.split(), dtype=np.uint8) for s in frame["pixels"]]).reshape(-1, 48, 48, 1)


def best_of(repeat, run, before=lambda: None):
    """Smallest wall time of `repeat` runs, and the last result."""
    times = []
    for _ in range(repeat):
        before()
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=find_real_data(), help="FER2013 CSV (default: the real file)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the best counts (default 3)")
    args = parser.parse_args(argv)
    if args.path is None:
        parser.error("no FER2013 file: pass PATH or set FER2013_CSV")

    with tempfile.TemporaryDirectory() as cache:
        os.environ["FER_KERAS_CACHE"] = cache

        def empty_cache():
            shutil.rmtree(os.path.join(cache, "decoded"), ignore_errors=True)

        t_naive, reference = best_of(args.repeat, lambda: naive(args.path))
        t_cold, data = best_of(args.repeat, lambda: load_fer2013(args.path), before=empty_cache)
        t_warm, warm = best_of(args.repeat, lambda: load_fer2013(args.path))
    assert np.array_equal(reference, data.images) and np.array_equal(data.images, warm.images)

    print(f"{args.path}: {len(data)} rows, {os.cpu_count()} CPU cores, best of {args.repeat}")
    print(f"{'method':<44}{'seconds':>9}{'speed-up':>10}")
    for name, seconds in [("naive: pandas.read_csv + per-row split", t_naive),
                          ("load_fer2013, cold (empty cache)", t_cold),
                          ("load_fer2013, warm (cache hit)", t_warm)]:
        print(f"{name:<44}{seconds:>9.3f}{t_naive / seconds:>9.1f}x")


if __name__ == "__main__":
    main()
