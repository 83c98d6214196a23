"""Shared CLI plumbing: every command reports user errors as one `error:` line, exit status 2, and
shows Keras progress the same way."""

import functools
import sys

from fer_keras.errors import FerError


def user_errors(main):
    """Wrap a `main(argv=None)` so `FerError` and missing files print `error: ...` and exit 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except (FerError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def keras_verbosity():
    """Keras `verbose` for a command's output: a live bar on a terminal, one line per epoch elsewhere
    (Keras 3 draws its carriage-return bar on any POSIX stdout, which fills log files)."""
    return 1 if sys.stdout.isatty() else 2
