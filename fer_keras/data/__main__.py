"""`python -m fer_keras.data stats PATH [--out DIR]` and `python -m fer_keras.data synthetic --out FILE`.

`stats` prints the statistics, and writes its charts only into the folder `--out` names.
"""

import argparse
from pathlib import Path

from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.data.plots import plot_class_distribution, plot_samples
from fer_keras.data.reader import load_fer2013
from fer_keras.data.stats import dataset_stats, format_stats
from fer_keras.data.synthetic import DEFAULT_N, write_synthetic_csv
from fer_keras.core.io import check_output


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser():
    parser = ArgumentParser(prog="python -m fer_keras.data", description="FER2013 data tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    stats = commands.add_parser("stats", help="rows per split and class, imbalance, duplicates, pixel mean/std; "
                                "writes class_distribution.png and samples.png")
    stats.add_argument("path", help="a FER2013 CSV (any layout, plain or .gz)")
    stats.add_argument("--out", type=Path, help="folder for the PNG charts (without it: no charts)")
    stats.add_argument("--skip-bad", action="store_true", help="skip bad rows instead of stopping at the first")
    synthetic = commands.add_parser("synthetic", help="write a synthetic FER-like CSV (fer2013.csv layout)")
    synthetic.add_argument("--out", type=Path, required=True, help="output CSV (.csv or .csv.gz)")
    synthetic.add_argument("--n", type=_positive, default=DEFAULT_N, help=f"number of faces (default {DEFAULT_N})")
    synthetic.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "synthetic":
        print(f"wrote {write_synthetic_csv(args.out, n=args.n, seed=args.seed)} ({args.n} faces, seed {args.seed})")
        return 0
    out = check_output(args.out, folder=True) if args.out else None
    data = load_fer2013(args.path, skip_bad=args.skip_bad)
    print(format_stats(dataset_stats(data)))
    if data.labels is None:
        print("no emotion column: no charts")
        return 0
    if out is None:
        print("no charts written: --out DIR writes class_distribution.png and samples.png into DIR")
        return 0
    for name, plot in (("class_distribution.png", plot_class_distribution), ("samples.png", plot_samples)):
        plot(data, out / name)
    print(f"charts written to {out}/: class_distribution.png, samples.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
