"""Shared CLI plumbing: every command reports user errors as one `error:` line, exit status 2."""

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
