"""One process per output folder: an advisory `flock` that the kernel drops when its holder dies,
so a killed run never leaves a stale lock behind."""

import contextlib
import fcntl
import os
from pathlib import Path

from fer_keras.errors import FerError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def folder_lock(folder, what="run"):
    """Hold `folder`'s lock for the block (creating the folder); a FerError naming the folder and
    the holder's process id when another process (or another block of this one) holds it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FerError(f"cannot use {folder} as a folder: it, or a folder above it, is a file") from None
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FerError(f"{folder} is in use by another {what} (process {holder}); wait for it to finish "
                           "or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
