from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tuning import backend
from tuning.device import Device, Gpu, detect, process_env, resolve_precision

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


def lscpu() -> dict[str, str]:
    """What `lscpu` (util-linux) reports, field by field: the OS's word, not the backend's."""
    if shutil.which("lscpu") is None:
        pytest.skip("lscpu is not installed")
    fields: dict[str, str] = {}
    todo = json.loads(subprocess.run(["lscpu", "-J"], capture_output=True, check=True).stdout)
    todo = todo["lscpu"]
    while todo:  # newer lscpu nests fields under others
        entry = todo.pop()
        fields[entry["field"].rstrip(":")] = entry["data"]
        todo += entry.get("children", [])
    return fields


def nvidia_gpus() -> list[tuple[str, tuple[int, int]]]:
    """(name, compute capability) of each GPU the NVIDIA driver reports; none without one."""
    if shutil.which("nvidia-smi") is None:
        return []
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        pytest.skip("CUDA_VISIBLE_DEVICES hides GPUs that nvidia-smi still lists")
    query = ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"]
    lines = subprocess.run(query, capture_output=True, text=True, check=True).stdout
    gpus = []
    for line in lines.strip().splitlines():
        name, capability = (part.strip() for part in line.rsplit(",", 1))
        major, minor = capability.split(".")
        gpus.append((name, (int(major), int(minor))))
    return gpus


def test_this_machine_is_detected_as_the_os_and_the_driver_report_it() -> None:
    """Checked against lscpu and nvidia-smi, not against the calls detect() makes itself."""
    cpu, gpus = lscpu(), nvidia_gpus()
    if gpus and backend.name() == "tensorflow":
        import tensorflow as tf

        if not tf.test.is_built_with_cuda():
            gpus = []  # a CPU-only TensorFlow trains on the CPU beside any GPU
    device = detect()
    assert [(gpu.name, gpu.compute_capability) for gpu in device.gpus] == gpus
    assert device.cpu_model == cpu["Model name"]
    assert device.cpu_cores == int(cpu["CPU(s)"])
    assert device.cpu_flags == frozenset(cpu["Flags"].split())
    if not gpus:
        assert device.describe() == f"CPU: {cpu['Model name']}, {cpu['CPU(s)']} cores"


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
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    env = process_env()
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "tuning" / "jax")
    # GPU memory is taken as needed, so workers share a GPU (both backends reserve it all).
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
