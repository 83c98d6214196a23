"""A one-line byte progress bar on stderr for long file reads.

Keras' Progbar would do, but importing Keras loads TensorFlow (seconds), which the data layer avoids.
"""

import sys
import time

_WIDTH = 30


class ByteBar:
    """Redrawn in place on a terminal; elsewhere (logs, CI) only the final line is printed."""

    def __init__(self, label, total, stream=None):
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.start = time.perf_counter()

    def update(self, done):
        if self.interactive:
            self.stream.write("\r" + self._line(done))
            self.stream.flush()

    def close(self, done=None):
        """Print the final line, at `done` bytes (default: all) when the read stopped early."""
        self.stream.write(("\r" if self.interactive else "") + self._line(self.total if done is None else done) + "\n")
        self.stream.flush()

    def _line(self, done):
        filled = int(_WIDTH * min(done / max(self.total, 1), 1.0))
        seconds = time.perf_counter() - self.start
        bar = "=" * filled + "." * (_WIDTH - filled)
        return f"{self.label} [{bar}] {done / 1e6:.1f}/{self.total / 1e6:.1f} MB {seconds:.1f}s"
