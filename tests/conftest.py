"""Shared fixtures: fixed seeds, an isolated cache and W&B offline for every test."""

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_keras.core.paths import find_real_data

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same seeds (Python, NumPy, TensorFlow/Keras), and leaves the
    global dtype policy as it found it (a bf16 run sets it)."""
    import keras

    random.seed(0)
    np.random.seed(0)
    keras.utils.set_random_seed(0)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def pytest_configure(config):
    """Ctrl-C reaches the processes the tests start, however the suite was launched: a suite started in
    the background by a script (`cmd &`) inherits SIGINT ignored, and so would they (CPython then never
    raises KeyboardInterrupt), failing the Ctrl-C tests. A handler, unlike an ignore, resets on exec."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _session_environment(tmp_path_factory):
    """The decode cache and W&B files out of the user's home for module fixtures too (they run
    before the per-test environment below)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FER_KERAS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setenv("WANDB_DIR", str(tmp_path_factory.getbasetemp() / "wandb"))
        mp.setenv("WANDB_DATA_DIR", str(tmp_path_factory.getbasetemp() / "wandb_data"))
        yield


@pytest.fixture(autouse=True)
def _test_environment(tmp_path_factory, monkeypatch):
    """The environment of every test and of the processes it starts: the decode cache and W&B files
    (with the artifacts W&B stages for `wandb sync`) out of the user's home, this checkout
    importable, no cluster from the caller's TF_CONFIG, and no FER2013_CSV (which would make every
    run without --data train on the real set)."""
    monkeypatch.setenv("FER_KERAS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path_factory.getbasetemp() / "wandb"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path_factory.getbasetemp() / "wandb_data"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("FER2013_CSV", raising=False)


REAL_FER2013 = find_real_data()  # read before any test removes FER2013_CSV


@pytest.fixture(scope="session")
def real_fer2013():
    """Path to the real `fer2013.csv.gz`; skips where it is absent."""
    path = REAL_FER2013
    if path is None:
        pytest.skip("real FER2013 absent: set FER2013_CSV or put fer2013.csv.gz in ../shared/data")
    return path


@pytest.fixture
def free_ports():
    """A function giving `n` distinct TCP ports on 127.0.0.1, free a moment ago (local clusters)."""

    def ports(n):
        sockets = [socket.socket() for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        found = [s.getsockname()[1] for s in sockets]
        for s in sockets:
            s.close()
        return found

    return ports


def _free_port_run(n):
    """The first of `n` consecutive TCP ports on 127.0.0.1, all free a moment ago."""
    while True:
        sockets = [socket.socket() for _ in range(n)]
        try:
            sockets[0].bind(("127.0.0.1", 0))
            port = sockets[0].getsockname()[1]
            for offset, s in enumerate(sockets[1:], 1):
                s.bind(("127.0.0.1", port + offset))
            return port
        except (OSError, OverflowError):
            continue
        finally:
            for s in sockets:
                s.close()


@pytest.fixture
def kerastuner_cluster(tmp_path):
    """A function running `python -m ARGS...` as a KerasTuner chief and workers worker0 and worker1 on
    127.0.0.1, from a free port followed by `ports - 1` free ones (a study serves series i on port + i).
    Every process must exit 0; returns each tuner id's standard output."""

    def run(args, ports=1):
        from fer_keras.data import default_data, load_fer2013

        load_fer2013(default_data())  # decode cache ready before three processes read it
        env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(_free_port_run(ports))}
        procs, logs = {}, {}
        try:
            for tuner_id in ("chief", "worker0", "worker1"):
                logs[tuner_id] = tmp_path / f"{tuner_id}.out"
                with open(logs[tuner_id], "w") as stdout, open(tmp_path / f"{tuner_id}.err", "w") as stderr:
                    procs[tuner_id] = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, stdout=stdout,
                                                       stderr=stderr, env={**env, "KERASTUNER_TUNER_ID": tuner_id})
            for tuner_id in ("worker0", "worker1", "chief"):
                code = procs[tuner_id].wait(timeout=300)
                assert code == 0, (tmp_path / f"{tuner_id}.err").read_text()[-3000:]
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return {tuner_id: log.read_text() for tuner_id, log in logs.items()}

    return run
