"""Precision: `auto` picks mixed_bfloat16 only where the hardware computes bfloat16 natively, an
explicit mixed_bfloat16 without it warns, and a run records the policy it trained under."""

import json
import os
import warnings
from pathlib import Path

import pytest

from fer_keras.training import precision
from fer_keras.training.config import resolve_config
from fer_keras.training.precision import cpu_flags, machine_summary, native_bfloat16, resolve_precision
from fer_keras.training.train import train

AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
BF16 = AVX2.replace("fma", "fma avx512f avx512_bf16")


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Point the detection at a written cpuinfo and a CPU-only backend; returns the writer."""
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "CPUINFO", path)
    monkeypatch.setattr(precision, "accelerator", lambda: "cpu")
    return path.write_text


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text(BF16)
    assert {"avx2", "avx512_bf16"} <= cpu_flags(tmp_path / "cpuinfo")
    assert cpu_flags(tmp_path / "missing") == set()


def test_native_bfloat16_by_platform_and_flags():
    assert native_bfloat16("cpu", flags={"avx2", "avx512_bf16"}) and native_bfloat16("cpu", flags={"amx_bf16"})
    assert not native_bfloat16("cpu", flags={"avx2", "fma", "avx512f"})
    assert native_bfloat16("gpu") and native_bfloat16("tpu")


def test_auto_follows_the_cpu_and_explicit_bf16_warns_where_it_is_emulated(cpuinfo):
    cpuinfo(AVX2)
    assert resolve_precision("auto") == "float32"
    with pytest.warns(UserWarning, match="emulated"):
        assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    cpuinfo(BF16)
    assert resolve_precision("auto") == "mixed_bfloat16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
        assert resolve_precision("float32") == "float32"


def test_machine_summary_names_the_cpu_and_its_bfloat16(cpuinfo):
    cpuinfo(AVX2)
    assert machine_summary() == f"{os.cpu_count()}-core CPU (AMD EPYC, no native bfloat16, no GPU)"
    cpuinfo(BF16.replace("model name\t: AMD EPYC\n", ""))
    assert machine_summary() == f"{os.cpu_count()}-core CPU (native bfloat16, no GPU)"


@pytest.mark.parametrize("flags, policy", [(AVX2, "float32"), (BF16, "mixed_bfloat16")])
def test_a_run_with_auto_records_the_policy_it_trained_under(tmp_path, cpuinfo, flags, policy):
    cpuinfo(flags)
    cfg = resolve_config({"model": "tiny_cnn", "limit": 200, "epochs": 1, "batch_size": 32, "wandb": "disabled",
                          "export": False, "precision": "auto", "out": str(tmp_path / "run")})
    metrics = train(cfg, verbose=0)
    assert metrics["precision"] == policy
    assert metrics["machine"].endswith(f"{'native' if policy == 'mixed_bfloat16' else 'no native'} bfloat16, no GPU)")
    assert "AMD EPYC" in metrics["machine"]
    assert json.loads((Path(cfg["out"]) / "metrics.json").read_text())["precision"] == policy
    assert json.loads((Path(cfg["out"]) / "config.json").read_text())["precision"] == "auto"
