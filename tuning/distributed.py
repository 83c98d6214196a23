"""KerasTuner's distributed mode: one chief serving the oracle, workers running the trials.

Every process runs the same `python -m tuning.search` command on one shared `--out` folder, with
`KERASTUNER_ORACLE_IP` / `KERASTUNER_ORACLE_PORT` (where the chief listens) and a unique
`KERASTUNER_TUNER_ID` each: an id containing "chief" serves the oracle, any other runs trials.
"""

import os

from fer_keras.errors import FerError

ENV_VARS = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def role(environ=None):
    """"single" (no distributed settings), "chief" or "worker", from the environment.

    Partial settings fail here with the missing variables named (KerasTuner would fail later).
    """
    environ = os.environ if environ is None else environ
    if "KERASTUNER_ORACLE_IP" not in environ:
        return "single"
    missing = [name for name in ENV_VARS if not environ.get(name)]
    if missing:
        raise FerError(f"distributed search: KERASTUNER_ORACLE_IP is set but {', '.join(missing)} is not")
    return "chief" if "chief" in environ["KERASTUNER_TUNER_ID"] else "worker"


def describe(environ=None):
    """One line saying what this process does in the search."""
    environ = os.environ if environ is None else environ
    kind = role(environ)
    if kind == "single":
        return "single process: runs every trial itself"
    address = f"{environ['KERASTUNER_ORACLE_IP']}:{environ['KERASTUNER_ORACLE_PORT']}"
    if kind == "chief":
        return f"chief {environ['KERASTUNER_TUNER_ID']}: serves the oracle on {address}, runs no trial"
    return f"worker {environ['KERASTUNER_TUNER_ID']}: runs trials from the oracle at {address}"
