"""Shared CLI plumbing: every command reports user errors (bad flags included) as one `error:` line,
exit status 2, stops on Ctrl-C with one line, exit status 130, and shows Keras progress the same way."""

import argparse
import functools
import sys

from fer_keras.errors import FerError

INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)
MAX_MESSAGE = 500  # characters of an error line; the rest is cut


def user_errors(main=None, *, interrupted="interrupted"):
    """Wrap a `main(argv=None)`: a FerError or OSError prints one `error: ...` line and exits 2,
    Ctrl-C prints the line `interrupted` and exits 130. Use as `@user_errors` or `@user_errors(interrupted=...)`.
    """
    if main is None:
        return functools.partial(user_errors, interrupted=interrupted)

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except (FerError, OSError) as exc:
            print(f"error: {error_message(exc)}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print(interrupted, file=sys.stderr)
            raise SystemExit(INTERRUPTED) from None

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one `error: ...` line pointing at `--help` (exit status 2),
    not argparse's usage block."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def error_message(exc):
    """One line of at most MAX_MESSAGE characters for an error: `PATH: reason` for an OSError about a file,
    else its message."""
    if isinstance(exc, OSError) and exc.filename is not None:
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else exc.filename
        line = f"{where}: {exc.strerror or exc}"
    else:
        line = " ".join(str(exc).splitlines()) or type(exc).__name__
    return line if len(line) <= MAX_MESSAGE else f"{line[:MAX_MESSAGE - 40]}... ({len(line):,} characters in all)"


def keras_verbosity():
    """Keras `verbose` for a command's output: a live bar on a terminal, one line per epoch elsewhere
    (Keras 3 draws its carriage-return bar on any POSIX stdout, which fills log files)."""
    return 1 if sys.stdout.isatty() else 2
