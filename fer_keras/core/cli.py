"""Shared CLI plumbing: every command reports user errors (bad flags included) as one `error:` line,
exit status 2, stops on Ctrl-C with one line, exit status 130, and shows Keras progress the same way."""

import argparse
import functools
import signal
import sys
import threading

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
            with _remember_ctrl_c():
                return main(argv)
        except (FerError, OSError) as exc:
            print(f"error: {error_message(exc)}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print(interrupted, file=sys.stderr)
            raise SystemExit(INTERRUPTED) from None

    return wrapper


_ctrl_c = threading.Event()


def ctrl_c_pressed():
    """Whether Ctrl-C reached a running command. Python drops the KeyboardInterrupt it raises when it lands
    in a garbage-collector callback (jaxlib, which TensorFlow imports, installs one), so long loops also
    poll this (training: `StopOnCtrlC`)."""
    return _ctrl_c.is_set()


class _remember_ctrl_c:
    """Within it, Ctrl-C still raises KeyboardInterrupt and is also remembered for `ctrl_c_pressed`;
    installed only where Python's own handler is (the main thread, not overridden by a host)."""

    def __enter__(self):
        _ctrl_c.clear()
        ours = threading.current_thread() is threading.main_thread()
        self.previous = signal.getsignal(signal.SIGINT) if ours else None
        if self.previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc):
        if self.previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, self.previous)

    @staticmethod
    def _on_sigint(signum, frame):
        _ctrl_c.set()
        raise KeyboardInterrupt


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
