"""KerasTuner's distributed mode: one chief serving the oracle, workers running the trials.

Every process runs the same `python -m tuning.search` (or `tuning.study`) command on one shared
`--out` folder, with `KERASTUNER_ORACLE_IP` / `KERASTUNER_ORACLE_PORT` (where the chief listens) and
a unique `KERASTUNER_TUNER_ID` each: an id containing "chief" serves the oracle, any other runs
trials. A study's searches follow one another, the i-th on the port + i: a worker done with one
waits there for the chief to serve the next, and never meets the oracle of the one before.
"""

import contextlib
import os
import threading
from concurrent import futures

import grpc
from keras_tuner.engine.trial import TrialStatus

from fer_keras.core.private_api import kt_oracle_chief as oracle_chief
from fer_keras.core.private_api import kt_protos as protos
from fer_keras.errors import FerError

ENV_VARS = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
_WORKERS = set()  # on the chief: every worker that has asked any of its searches for a trial
_SERVERS = []  # on the chief: its servers, kept answering until it exits (a late worker is told "over")


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


@contextlib.contextmanager
def search_port(index):
    """Inside, KERASTUNER_ORACLE_PORT is the port of a study's `index`-th search: the given port + index."""
    port = os.environ.get("KERASTUNER_ORACLE_PORT")
    if not port or not index:
        yield
        return
    os.environ["KERASTUNER_ORACLE_PORT"] = str(int(port) + index)
    try:
        yield
    finally:
        os.environ["KERASTUNER_ORACLE_PORT"] = port


class _Servicer(oracle_chief.OracleServicer):
    """KerasTuner's oracle service that also notes the workers it told the search is over, and sets
    `over` once that is every worker seen so far, with no trial running."""

    def __init__(self, oracle):
        super().__init__(oracle)
        self.told, self.over = set(), threading.Event()

    def CreateTrial(self, request, context):
        response = super().CreateTrial(request, context)
        _WORKERS.add(request.tuner_id)
        if TrialStatus.from_proto(response.trial.status) == TrialStatus.STOPPED:
            self.told.add(request.tuner_id)
        if _WORKERS <= self.told and oracle_chief.exit_chief(self.oracle):
            self.over.set()
        return response


def serve(tuner, verbose):
    """The chief's `tuner.search`: serve its oracle until every worker seen so far, in this search or an
    earlier one of the study, has been told it is over (KerasTuner waits only for this search's, and
    checks every 20 s)."""
    tuner.oracle.verbose = verbose
    tuner.save()
    servicer = _Servicer(tuner.oracle)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}")
    server.start()
    _SERVERS.append(server)
    servicer.over.wait()
