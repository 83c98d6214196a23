"""Multi-worker training (`tf.distribute.MultiWorkerMirroredStrategy` from `TF_CONFIG`).

Keras 3.15's `Model.fit` fails under this strategy (https://github.com/keras-team/keras/issues/20585):
before the first step it reduces the first batch, a nested structure, across workers; every step
then averages the scalar metrics "along axis 0". `strategy()` wraps those two Keras functions so
that, under multi-worker only, the first batch is read locally (it only gives the model its input
shapes) and metrics are averaged across workers as whole values; every other strategy is left to
Keras. tests/test_train.py checks both that fit fails without the fix and that two workers train
together with it.
"""

import functools
import json
import os

import keras
import tensorflow as tf
from keras import tree

from fer_keras.core.private_api import keras_tf_trainer as tf_trainer
from fer_keras.errors import FerError


def strategy():
    """A `MultiWorkerMirroredStrategy` for the cluster in `TF_CONFIG`, with Keras `fit` fixed."""
    _check_tf_config(os.environ.get("TF_CONFIG"))
    _fix_keras()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as exc:  # TensorFlow started before the strategy was created
        raise FerError(
            f"strategy 'multi_worker' must be created before any TensorFlow work ({exc}): "
            "run each worker as its own `python -m fer_keras.train` process"
        ) from None


def _check_tf_config(text):
    """Fail clearly on a missing or malformed `TF_CONFIG` (TensorFlow would run one worker alone or
    fail deep inside its cluster resolver)."""
    example = ('e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not text:
        raise FerError(f"strategy 'multi_worker' needs TF_CONFIG to describe the cluster, {example}")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FerError(f"TF_CONFIG is not valid JSON ({exc}); {example}") from None
    if not isinstance(tf_config, dict):
        raise FerError(f"TF_CONFIG must be a JSON object; {example}")
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise FerError(f"TF_CONFIG has no 'cluster' of task addresses; {example}")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise FerError(f"TF_CONFIG 'task' must name a task type of its cluster ({', '.join(cluster)}); {example}")
    index, addresses = task.get("index"), cluster[task["type"]]
    if not isinstance(index, int) or not 0 <= index < len(addresses):
        raise FerError(
            f"TF_CONFIG task index {index!r} is not one of the {len(addresses)} "
            f"{task['type']!r} addresses"
        )


def role(strategy):
    """`(is_chief, task)` of this process: `task` like "worker-1", None outside a cluster. The chief
    is the "chief" task, or worker 0 where the cluster has none."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, None
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return chief, f"{task_type}-{task_id}"


class SameResumeEpoch(keras.callbacks.Callback):
    """Stop before the first step where the workers would resume from different epochs (a worker's
    backup lost, or a kill while the backups were being written): their collective ops would wait on
    each other for ever. Goes after `BackupAndRestore`, which sets the epoch to resume from."""

    def on_train_begin(self, logs=None):
        strategy = self.model.distribute_strategy
        if not _in_multi_worker(strategy):
            return
        mine = tf.constant([self.model._initial_epoch or 0], tf.int64)
        epochs = strategy.gather(mine, axis=0).numpy().tolist()  # in worker order
        if len(set(epochs)) > 1:
            found = ", ".join(f"worker {i}: epoch {e + 1}" for i, e in enumerate(epochs))
            raise FerError(
                f"the workers would resume from different epochs ({found}): their backups do not "
                "match; delete every worker's backup folder to train again from the start"
            )


def _in_multi_worker(strategy):
    return strategy is not None and tf_trainer._collective_all_reduce_multi_worker(strategy)


def _local_first_batch(maybe_symbolic_build):
    @functools.wraps(maybe_symbolic_build)
    def wrapper(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and _in_multi_worker(strategy):
            for _, _, it in iterator:
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(it)
                )
                break
            iterator = None
        return maybe_symbolic_build(self, iterator=iterator, data_batch=data_batch)

    return wrapper


def _whole_value_mean(reduce_per_replica):
    @functools.wraps(reduce_per_replica)
    def wrapper(values, strategy, reduction):
        if reduction in ("auto", "mean") and _in_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    return wrapper


def _fix_keras():
    """Install both wrappers once."""
    trainer = tf_trainer.TensorFlowTrainer
    if getattr(trainer._maybe_symbolic_build, "__wrapped__", None) is None:
        trainer._maybe_symbolic_build = _local_first_batch(trainer._maybe_symbolic_build)
    if getattr(tf_trainer.reduce_per_replica, "__wrapped__", None) is None:
        tf_trainer.reduce_per_replica = _whole_value_mean(tf_trainer.reduce_per_replica)
