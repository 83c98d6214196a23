"""`tf.distribute` strategies for training: one device, all local devices, or several machines.

Create the strategy before anything else touches TensorFlow: `mirrored` on a machine without a
GPU splits the CPU into two logical devices, and `multi_worker` configures collective ops, both of
which TensorFlow allows only before it starts.
"""

import tensorflow as tf

from fer_keras.training import multi_worker
from fer_keras.training.choices import STRATEGIES
from fer_keras.errors import FerError


def get_strategy(name="default"):
    """The `tf.distribute.Strategy` called `name`.

    - default: the current (single-device) strategy;
    - mirrored: `MirroredStrategy` over every local GPU, or over two logical CPUs on a machine
      without GPU (the same code path, so it is tested on a CPU-only machine);
    - multi_worker: `MultiWorkerMirroredStrategy` over the cluster in `TF_CONFIG` (one process per
      worker, each started with the same command); see `fer_keras.training.multi_worker`.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()  # every local GPU
        return tf.distribute.MirroredStrategy(_logical_cpus(2))
    if name == "multi_worker":
        return multi_worker.strategy()
    raise FerError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")


def _logical_cpus(n):
    """Names of `n` logical CPU devices, splitting the physical CPU if TensorFlow has not started."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        pass  # already initialised: use the logical CPUs it has
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < n:
        raise FerError(
            "strategy 'mirrored' needs two devices: TensorFlow started before the CPU could be split; "
            "choose the strategy before running any TensorFlow code"
        )
    return devices[:n]


def check_even_batches(strategy, batch_size, sizes):
    """Fail early where Keras 3.15 would fail inside `fit`: with several replicas it reduces each
    dataset's first batch across them, which needs that batch to split evenly.

    `sizes`: {dataset name: number of images}; the first batch holds min(batch_size, n) of them.
    """
    replicas = strategy.num_replicas_in_sync
    for name, n in sizes.items():
        first = min(batch_size, n)
        if first % replicas:
            raise FerError(
                f"with {replicas} replicas every dataset's first batch must split evenly (Keras reduces "
                f"it across replicas), but the {name} set's first batch holds {first} images: use a "
                f"batch_size that is a multiple of {replicas} and no larger than the {name} set"
            )
