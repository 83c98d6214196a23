"""Decode cache keyed on a file's content (SHA-256 of its bytes), under `fer_keras.core.paths.cache_dir()`.

An entry is `<key>.images.npy` (uncompressed, so a warm load is one read) plus `<key>.meta.npz`
(labels, Usage, file lines, bad rows), each written atomically, the meta file last: an entry
without its meta file is ignored. Editing the file changes its key, so a changed file is always
re-read.
"""

import hashlib
import sys
import zipfile

import numpy as np

from fer_keras.core.io import atomic_path
from fer_keras.core.paths import cache_dir

FORMAT = 2  # bump when the decoded arrays change meaning, to retire old entries


def file_key(path):
    """Cache key of the file at `path`: its SHA-256 (about 0.1 s for the 85 MB FER2013 gzip)."""
    with open(path, "rb") as f:
        return f"{hashlib.file_digest(f, 'sha256').hexdigest()}-v{FORMAT}"


def _paths(key):
    folder = cache_dir() / "decoded"
    return folder / f"{key}.images.npy", folder / f"{key}.meta.npz"


def load(key):
    """`(images, meta dict of arrays)` cached under `key`, or None when absent or unreadable."""
    images_path, meta_path = _paths(key)
    try:
        with np.load(meta_path) as meta:
            arrays = {name: meta[name] for name in meta.files}
        return np.load(images_path), arrays
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def save(key, images, meta):
    """Store `images` and the small `meta` arrays under `key`; a read-only cache only warns."""
    images_path, meta_path = _paths(key)
    try:
        with atomic_path(images_path) as tmp:
            np.save(tmp, images)
        with atomic_path(meta_path) as tmp:
            np.savez(tmp, **meta)
    except OSError as exc:
        print(f"warning: cannot write the decode cache ({exc}); the file will be decoded again next time",
              file=sys.stderr)
