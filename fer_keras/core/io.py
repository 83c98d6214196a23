"""File output: check early that an output path can be written, then write atomically (a temporary
file beside the target, renamed over it)."""

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's folder; on success it replaces `path` atomically.

    For writers that take a file name (Keras `save`, matplotlib `savefig`): a kill mid-write
    leaves the old file (or none), never a half-written one.
    """
    path = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_output(path, folder=False):
    """`path` as a Path when it can be written as a file (or, with `folder`, as a folder); else an OSError
    naming it and what is in the way. CLIs call it on `--out` before the work, so a bad path fails fast."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        if folder:
            raise NotADirectoryError(errno.ENOTDIR, "is a file; expected a folder", str(path))
        raise IsADirectoryError(errno.EISDIR, "is a folder; expected a file name", str(path))
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"cannot be created: {parent} is a file", str(path))
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"cannot be written: {parent} is not writable", str(path))
    return path


def _umask():
    """The process umask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text):
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj):
    """Write `obj` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, default=_to_builtin) + "\n")


def _to_builtin(value):
    """JSON fallback for numpy scalars/arrays and paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
