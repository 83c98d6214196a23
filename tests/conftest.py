"""Shared fixtures: fixed seeds, an isolated cache and W&B offline for every test."""

import os
import random
import socket
from pathlib import Path

import numpy as np
import pytest

from fer_keras.paths import find_real_data

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
