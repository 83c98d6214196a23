"""`python -m fer_keras.models [NAMES] [--markdown]`: the architecture table (docs/models.md shows it)."""

from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.errors import FerError
from fer_keras.models import list_models
from fer_keras.models.profile import profile

COLUMNS = ("name", "parameters", "trainable", "MACs/image", "description")


def _si(value):
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return str(value)


def _cells(row):
    return (row["name"], f"{row['params']:,}", f"{row['trainable']:,}", _si(row["macs"]), row["description"])


def format_table(rows, markdown=False):
    """Rows of `profile.profile` as aligned plain text, or as a Markdown table."""
    cells = [_cells(row) for row in rows]
    if markdown:
        lines = [COLUMNS, ("---", "---:", "---:", "---:", "---"), *cells]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[i]) for line in [COLUMNS, *cells]) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join([cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))]
                  + [line[-1]])
        for line in [COLUMNS, *cells]
    )


@user_errors
def main(argv=None):
    parser = ArgumentParser(
        prog="python -m fer_keras.models",
        description="List the registered architectures: parameters, MACs per image, description.",
        epilog="trainable: parameters without BatchNormalization's moving statistics (PyTorch's count). MACs: "
        "multiply-accumulates of conv, dense and attention layers for one 48x48 image (see "
        "fer_keras/models/profile.py).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to list (default: all)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (as in docs/models.md)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(list_models()))
    if unknown:
        raise FerError(f"unknown model {', '.join(unknown)}; known models: {', '.join(list_models())}")
    print(format_table([profile(name) for name in args.names or list_models()], markdown=args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
