"""Where things live: the real FER2013 files, the decode cache, run folders."""

import os
from pathlib import Path

_SHARED_DATA = "shared/data"


def cache_dir():
    """The decode cache: `$FER_KERAS_CACHE`, default `~/.cache/fer_keras`."""
    return Path(os.environ.get("FER_KERAS_CACHE", Path.home() / ".cache" / "fer_keras"))


def shared_data_dirs():
    """Candidate `shared/data` folders: beside the working directory and beside this checkout."""
    repo_root = Path(__file__).resolve().parents[2]
    return [Path.cwd().parent / _SHARED_DATA, repo_root.parent / _SHARED_DATA]


def find_real_data(name="fer2013.csv.gz"):
    """Path of a real FER2013 file: `$FER2013_CSV` (for the labelled file), else `../shared/data/NAME`.

    Returns None when absent, so callers can fall back to synthetic data or skip.
    """
    env = os.environ.get("FER2013_CSV")
    if env and name == "fer2013.csv.gz":
        return Path(env) if Path(env).exists() else None
    for d in shared_data_dirs():
        if (d / name).exists():
            return d / name
    return None
