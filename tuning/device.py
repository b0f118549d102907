"""Where training runs: the device's name, and the precision `auto` picks.

The choices are pure functions of what the machine reports (GPU compute capabilities, CPU flags),
so they are tested on any machine; `detect()` asks the Keras backend and the OS once per process.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# Tensor cores arrived with compute capability 7.0 (Volta); float16 is only fast with them.
TENSOR_CORE_CAPABILITY = (7, 0)
# CPU flags (/proc/cpuinfo) under which oneDNN runs bfloat16 matrix maths natively.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# Set by the `tuning` command before any backend starts: GPU memory is taken as needed, not all
# at once, so several workers share one GPU (TensorFlow and JAX reserve it all by default).
GPU_MEMORY_ENV = {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def process_env() -> dict[str, str]:
    """The environment the `tuning` command sets, where the user has not, before any backend
    starts: `GPU_MEMORY_ENV`, and JAX's compiled functions kept on disk (~/.cache/tuning/jax),
    since Keras compiles every fold's model afresh: the JAX smoke study's seed trial took 8.7 s
    with a warm cache against 15.1 s without (2 cores)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tuning" / "jax"
    return {
        **GPU_MEMORY_ENV,
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # a small CNN's steps compile fast
    }


@dataclass(frozen=True)
class Gpu:
    """One GPU as the Keras backend sees it."""

    name: str
    compute_capability: tuple[int, int] | None


@dataclass(frozen=True)
class Device:
    """The hardware a process trains on: its GPUs (none: the CPU) and the CPU itself."""

    gpus: tuple[Gpu, ...]
    cpu_model: str
    cpu_cores: int
    cpu_flags: frozenset[str]

    def describe(self) -> str:
        """'GPU: NVIDIA H100 80GB HBM3 x1' or 'CPU: Intel(R) Xeon(R) ..., 2 cores'."""
        if self.gpus:
            names = sorted({gpu.name for gpu in self.gpus})
            return f"GPU: {' + '.join(names)} x{len(self.gpus)}"
        return f"CPU: {self.cpu_model}, {self.cpu_cores} cores"


def resolve_precision(requested: str, device: Device) -> str:
    """The Keras dtype policy for `requested`; `auto` picks by hardware.

    `auto` gives `mixed_float16` on GPUs with tensor cores, `mixed_bfloat16` on CPUs with
    AVX512-BF16 or AMX, and `float32` elsewhere. Any other value is returned unchanged.
    """
    if requested != "auto":
        return requested
    if device.gpus:
        capabilities = [gpu.compute_capability for gpu in device.gpus]
        if all(c is not None and c >= TENSOR_CORE_CAPABILITY for c in capabilities):
            return "mixed_float16"
        return "float32"
    if device.cpu_flags & set(BF16_CPU_FLAGS):
        return "mixed_bfloat16"
    return "float32"


def _cpu_info() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:  # not Linux: the model from `platform` is all there is
        pass
    return model or "unknown CPU", flags


@functools.cache
def detect() -> Device:
    """This process's device: the GPUs its Keras backend trains on (CUDA_VISIBLE_DEVICES
    honoured) and the CPU. First lets GPU memory grow as needed (`GPU_MEMORY_ENV`)."""
    from tuning.backend import configure_gpu_memory, list_gpus

    for key, value in GPU_MEMORY_ENV.items():  # where the `tuning` command has not set them
        os.environ.setdefault(key, value)
    configure_gpu_memory()
    gpus = tuple(Gpu(name=gpu, compute_capability=capability) for gpu, capability in list_gpus())
    model, flags = _cpu_info()
    return Device(gpus=gpus, cpu_model=model, cpu_cores=os.cpu_count() or 1, cpu_flags=flags)
