"""Which FER2013 CSV layout a header line describes: where the emotion, pixels and Usage columns are."""

from dataclasses import dataclass

from fer_keras.errors import DataError

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Layout:
    """Column positions of a header; `emotion` / `usage` are None where the file has no such column.

    Covers fer2013.csv (`emotion,pixels,Usage`), Kaggle train.csv (`emotion,pixels`), test.csv
    (`pixels`, maybe with an id column) and icml_face_data.csv (`emotion, Usage, pixels`).
    """

    columns: tuple
    pixels: int
    emotion: int | None
    usage: int | None

    @property
    def header(self):
        """The column names for a one-line message: characters that are not printable are escaped."""
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in ",".join(self.columns))


def parse_header(line, path):
    """`Layout` of the header `line` (bytes, without the newline) of file `path`."""
    names = [c.strip().strip('"').strip() for c in line.removeprefix(_BOM).decode("utf-8", "replace").split(",")]
    lowered = [n.lower() for n in names]
    for name in set(lowered):
        if lowered.count(name) > 1:
            raise DataError(f"{path}: line 1: column {name!r} appears twice in the header")
    if "pixels" not in lowered:
        raise DataError(
            f"{path}: line 1: missing column 'pixels' (header is {_short(','.join(names))!r}; expected a "
            "FER2013 layout such as 'emotion,pixels,Usage')"
        )

    def position(name):
        return lowered.index(name) if name in lowered else None

    return Layout(tuple(names), position("pixels"), position("emotion"), position("usage"))


def _short(text, limit=60):
    return text if len(text) <= limit else text[:limit] + "..."
