"""Writing faces as a FER2013 CSV (`emotion,pixels,Usage`), vectorised and atomic; `.gz` paths are gzipped."""

from pathlib import Path

import numpy as np
from isal import igzip

from fer_keras.constants import NUM_PIXELS
from fer_keras.core.io import atomic_path

_ROWS_PER_BATCH = 2048
_TOKENS = [b"%d " % v for v in range(256)]
_TOKEN_BYTES = np.array([list(t.ljust(4)) for t in _TOKENS], np.uint8)
_TOKEN_KEEP = np.arange(4) < np.array([len(t) for t in _TOKENS])[:, None]


def pixel_strings(images):
    """Space-separated pixel text (bytes) of each uint8 image, without a per-value Python loop."""
    flat = np.asarray(images, np.uint8).reshape(len(images), NUM_PIXELS)
    text = _TOKEN_BYTES[flat][_TOKEN_KEEP[flat]].tobytes()
    ends = np.cumsum(_TOKEN_KEEP[flat].sum(axis=(1, 2))).tolist()
    return [text[start:end - 1] for start, end in zip([0] + ends[:-1], ends)]


def write_csv(path, images, labels=None, usage=None):
    """Write a FER2013 CSV with the columns given (`emotion` if labels, `Usage` if usage) to `path`."""
    path = Path(path)
    columns = [b"emotion"] * (labels is not None) + [b"pixels"] + [b"Usage"] * (usage is not None)
    with atomic_path(path) as tmp:
        opener = igzip.open(tmp, "wb", compresslevel=1) if path.suffix == ".gz" else open(tmp, "wb")
        with opener as f:
            f.write(b",".join(columns) + b"\n")
            for start in range(0, len(images), _ROWS_PER_BATCH):
                rows = slice(start, start + _ROWS_PER_BATCH)
                fields = [pixel_strings(images[rows])]
                if labels is not None:
                    fields.insert(0, [b"%d" % v for v in np.asarray(labels[rows]).tolist()])
                if usage is not None:
                    fields.append([str(u).encode() for u in usage[rows]])
                f.write(b"".join(b",".join(row) + b"\n" for row in zip(*fields)))
