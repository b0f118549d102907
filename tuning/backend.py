"""The Keras backend a process trains with, and the few things that differ between backends:
which library versions decide what a trial computes, which GPUs it sees, how its CPU threads and
GPU memory are set, and how a small function is run fast on the host. Everything else in
tuning speaks `keras.ops`; an export's other formats are written by TensorFlow whatever the
backend (`tuning.model.formats`).

Keras picks the backend once per process, from `KERAS_BACKEND` (default: tensorflow); an
unknown name fails `import keras` without saying the choices, so the entry points check it first
(`check_backend_name`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from tuning.errors import ConfigError

BACKENDS = ("tensorflow", "jax", "torch")  # the backends tuning trains with
# Every backend Keras can import (keras/src/backend/__init__.py); the last two only predict.
KERAS_BACKENDS = (*BACKENDS, "numpy", "openvino")
ENV_BACKEND = "KERAS_BACKEND"

HostFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def check_backend_name() -> None:
    """Refuse a `KERAS_BACKEND` that names no Keras backend, before `import keras` fails on it
    without the choices. An empty one is Keras's default, as Keras reads it.

    Raises:
        ConfigError: naming the value and the backends there are.
    """
    given = os.environ.get(ENV_BACKEND, "")
    if not given or given in KERAS_BACKENDS:
        return
    close = difflib.get_close_matches(given.lower(), KERAS_BACKENDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"{ENV_BACKEND}={given!r} is not a Keras backend{hint}; expected one of: "
        f"{', '.join(BACKENDS)} (tuning trains with these), {', '.join(KERAS_BACKENDS[3:])} "
        "(Keras's, for predictions only)"
    )


def name() -> str:
    """'tensorflow', 'jax' or 'torch'."""
    import keras  # here, not above: importing this module starts no backend

    return str(keras.backend.backend())


def versions() -> dict[str, str]:
    """The backend's own libraries and their versions, e.g. {'jax': '0.10.2', 'jaxlib': ...}."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return {"tensorflow": tf.__version__}
    if backend == "jax":
        import jax
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}
    import torch

    return {"torch": str(torch.__version__)}


def list_gpus() -> list[tuple[str, tuple[int, int] | None]]:
    """(name, compute capability) of each GPU the backend trains on (CUDA_VISIBLE_DEVICES
    honoured); empty on a CPU."""
    backend = name()
    found: list[tuple[str, tuple[int, int] | None]] = []
    if backend == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            capability = details.get("compute_capability")
            found.append(
                (str(details.get("device_name", gpu.name)), compute_capability(capability))
            )
    elif backend == "jax":
        import jax

        for device in jax.devices():
            if device.platform == "gpu":
                capability = getattr(device, "compute_capability", None)
                found.append((str(device.device_kind), compute_capability(capability)))
    else:
        import torch

        for i in range(torch.cuda.device_count()):
            capability = torch.cuda.get_device_capability(i)
            found.append((str(torch.cuda.get_device_name(i)), compute_capability(capability)))
    return found


def compute_capability(given: Any) -> tuple[int, int] | None:
    """A compute capability as (major, minor), from TensorFlow's and PyTorch's (9, 0) or JAX's
    '9.0'; None if there is none."""
    parts = given.split(".") if isinstance(given, str) else given
    with contextlib.suppress(TypeError, ValueError):
        major, minor = parts[:2]
        return int(major), int(minor)
    return None


def configure_gpu_memory() -> None:
    """Let TensorFlow's GPU memory grow as needed instead of reserving it all, so workers can
    share a GPU: TensorFlow may already be imported, so it is told directly while it still
    listens. The environment the caller sets (`tuning.device.GPU_MEMORY_ENV`) does the same for
    every backend that has not started yet; PyTorch takes memory as needed by itself."""
    if name() == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            # Once a GPU is initialised its memory setting can no longer change: nothing to do.
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)


def set_cpu_threads(threads: int) -> None:
    """Train on `threads` CPU threads (and one thread between operations), so that W workers of
    C // W threads each do not oversubscribe the CPU. Must run before the backend computes.

    JAX's CPU backend has one switch: a single thread or all of them; with more than one thread
    it is left at all of them.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # once work has started it can no longer change
            torch.set_num_interop_threads(1)
    elif threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        single = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{flags} {single}".strip()


@functools.cache  # one compiled function per process, however many folds ask for it
def host_function(fn: Callable[[Any, Any], Any]) -> HostFn:
    """`fn` (written in `keras.ops`) as a function of NumPy arrays that computes on the CPU,
    leaving the accelerator to training; compiled once per shape under JAX, where calling
    operations one by one costs several times the work itself."""
    if name() == "jax":
        import jax

        cpu = jax.devices("cpu")[0]
        compiled = jax.jit(fn)

        def on_jax(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.asarray(compiled(jax.device_put(a, cpu), jax.device_put(b, cpu)))

        return on_jax

    import keras

    def eager(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with keras.device("cpu"):
            return np.asarray(keras.ops.convert_to_numpy(fn(a, b)))

    return eager


def steps_per_execution(wanted: int) -> int:
    """`wanted` batches per call into the training step, where the backend can (PyTorch's
    trainer takes one at a time)."""
    return 1 if name() == "torch" else wanted


def peak_gpu_bytes() -> int | None:
    """The most GPU memory this process has held so far (the first GPU); None on a CPU or where
    the backend does not say."""
    backend = name()
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        stats = gpus[0].memory_stats() if gpus else None
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None
    if backend == "torch":
        import torch

        return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
