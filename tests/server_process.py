"""A `python -m fer_keras.serve` process for the server tests (tests/test_serve.py, tests/test_hostile_server.py)."""

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120  # seconds for the server to import TensorFlow and load the model on a busy 2-core machine


class Server:
    """A `python -m fer_keras.serve` process and everything it has printed so far."""

    def __init__(self, args):
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "fer_keras.serve", *args], cwd=REPO, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.url = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(START_TIMEOUT) or self.url is None:
            self.stop()
            pytest.fail("the server did not start:\n" + self.output())

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)
            found = re.search(r"serving (http://\S+/)", line)
            if found:
                self.url = found.group(1)
                self._ready.set()
        self._ready.set()

    @property
    def port(self):
        return int(re.search(r":(\d+)/$", self.url).group(1))

    def output(self):
        return "".join(self.lines)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
