from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuning.device import Device, Gpu, detect, resolve_precision

AMX_CPU = Device(
    gpus=(), cpu_model="Xeon", cpu_cores=2, cpu_flags=frozenset({"avx512f", "amx_bf16"})
)
BF16_CPU = Device(gpus=(), cpu_model="Xeon", cpu_cores=2, cpu_flags=frozenset({"avx512_bf16"}))
PLAIN_CPU = Device(gpus=(), cpu_model="EPYC", cpu_cores=2, cpu_flags=frozenset({"avx2", "fma"}))
H100 = Gpu("NVIDIA H100 80GB HBM3", (9, 0))
P100 = Gpu("Tesla P100-PCIE-16GB", (6, 0))


def on(*gpus: Gpu) -> Device:
    return Device(gpus=gpus, cpu_model="EPYC", cpu_cores=16, cpu_flags=frozenset({"amx_bf16"}))


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        (on(H100), "mixed_float16"),
        (on(H100, H100), "mixed_float16"),
        (on(P100), "float32"),  # no tensor cores: float16 buys nothing
        (on(H100, P100), "float32"),  # one policy for all workers: the weakest GPU decides
        (on(Gpu("unknown", None)), "float32"),
        (AMX_CPU, "mixed_bfloat16"),
        (BF16_CPU, "mixed_bfloat16"),
        (PLAIN_CPU, "float32"),
    ],
)
def test_auto_precision_follows_the_hardware(device: Device, expected: str) -> None:
    assert resolve_precision("auto", device) == expected


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_an_explicit_precision_is_kept_on_any_hardware(policy: str) -> None:
    assert resolve_precision(policy, on(H100)) == resolve_precision(policy, PLAIN_CPU) == policy


def test_the_device_is_named_by_gpu_model_and_count_or_cpu_model_and_cores() -> None:
    assert on(H100, H100).describe() == "GPU: NVIDIA H100 80GB HBM3 x2"
    assert PLAIN_CPU.describe() == "CPU: EPYC, 2 cores"


def test_this_machine_is_detected_as_tensorflow_sees_it() -> None:
    import tensorflow as tf

    device = detect()
    assert len(device.gpus) == len(tf.config.list_physical_devices("GPU"))
    if not device.gpus:
        assert device.describe().startswith("CPU: ") and device.cpu_cores == os.cpu_count()
        assert device.cpu_model and device.cpu_model != "unknown CPU"


def test_compute_capabilities_read_alike_from_every_backend() -> None:
    """TensorFlow's and PyTorch's (9, 0), JAX's '9.0'; nothing readable is None (no tensor
    cores assumed, so float32)."""
    from tuning.backend import compute_capability

    assert compute_capability((9, 0)) == compute_capability("9.0") == (9, 0)
    assert compute_capability([7, 5]) == (7, 5)
    assert compute_capability(None) is compute_capability("sm90") is None


def test_the_command_keeps_jax_compilations_in_the_user_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tuning.device import GPU_MEMORY_ENV, process_env

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    env = process_env()
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "tuning" / "jax")
    assert GPU_MEMORY_ENV.items() <= env.items()
