"""Which dtype policy pays on this machine: `mixed_bfloat16` only where bfloat16 is computed
natively (x86 CPUs with AVX512-BF16 or AMX, GPUs, TPUs). Elsewhere it is emulated and many times
slower (figures in docs/results.md)."""

import os
import warnings
from pathlib import Path

import keras

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_field(name, cpuinfo=None):
    """The value of the first CPU's `name` line in `cpuinfo` (default /proc/cpuinfo), "" where there is none."""
    try:
        text = Path(cpuinfo or CPUINFO).read_text()
    except OSError:
        return ""
    return next((line.partition(":")[2].strip() for line in text.splitlines() if line.startswith(name)), "")


def cpu_flags(cpuinfo=None):
    """The feature flags of the first CPU in `cpuinfo` (default /proc/cpuinfo; none where it does not exist)."""
    return set(cpuinfo_field("flags", cpuinfo).split())


def accelerator():
    """The platform Keras' backend computes on: "cpu", "gpu" or "tpu"."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        for kind in ("TPU", "GPU"):
            if tf.config.list_logical_devices(kind):
                return kind.lower()
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def native_bfloat16(platform=None, flags=None):
    """Whether `platform` (default: this machine's) computes bfloat16 natively."""
    platform = platform or accelerator()
    if platform != "cpu":
        return True
    return bool(set(BF16_CPU_FLAGS) & (cpu_flags() if flags is None else set(flags)))


def resolve_precision(precision):
    """`precision` as a Keras dtype policy name: "auto" becomes mixed_bfloat16 where bfloat16 is
    native, else float32; an explicit mixed_bfloat16 without it warns that it will be slow."""
    if precision == "float32":
        return precision
    native = native_bfloat16()
    if precision == "auto":
        return "mixed_bfloat16" if native else "float32"
    if not native:
        warnings.warn("mixed_bfloat16 on a CPU without native bfloat16 (AVX512-BF16 or AMX) is emulated and "
                      "several times slower than float32; use precision auto or float32", stacklevel=2)
    return precision


def machine_summary():
    """One line naming what this machine trains on, for run records and model cards."""
    platform = accelerator()
    if platform != "cpu":
        return f"{platform.upper()} ({keras.backend.backend()} backend)"
    model = cpuinfo_field("model name")
    bf16 = "native bfloat16" if native_bfloat16("cpu") else "no native bfloat16"
    return f"{os.cpu_count()}-core CPU ({model + ', ' if model else ''}{bf16}, no GPU)"
