"""Every private Keras and KerasTuner module fer_keras uses, in one place, each imported on first use.

No public API does these jobs: `training.multi_worker` patches Keras' TensorFlow trainer (a fit bug
under MultiWorkerMirroredStrategy), `tuning.tuner` reports epochs to KerasTuner with its own
callback and writes its JSON state atomically, and `tuning.distributed` serves KerasTuner's oracle
over gRPC. tests/test_layout.py fails when the pinned versions (requirements.txt) stop providing
what is used of them.
"""

import importlib

# name -> (private module, attribute of it or None for the module itself, what fer_keras uses of it)
PRIVATE = {
    "keras_tf_trainer": ("keras.src.backend.tensorflow.trainer", None,
                         ("TensorFlowTrainer", "reduce_per_replica", "_collective_all_reduce_multi_worker")),
    "TunerCallback": ("keras_tuner.src.engine.tuner_utils", "TunerCallback", ()),
    "kt_stateful": ("keras_tuner.src.engine.stateful", "Stateful", ("save", "get_state")),
    "kt_protos": ("keras_tuner.src.protos", None, ("get_service_grpc",)),
    "kt_oracle_chief": ("keras_tuner.src.distribute.oracle_chief", None, ("OracleServicer", "exit_chief")),
}
__all__ = list(PRIVATE)


def __getattr__(name):
    if name not in PRIVATE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute, _ = PRIVATE[name]
    found = importlib.import_module(module)
    return found if attribute is None else getattr(found, attribute)
