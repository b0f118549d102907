"""What changes when several processes work on one study: CPU threads and sampler seeds."""

from __future__ import annotations

import os
import socket
import zlib

from tuning.errors import TuningError


def configure_threads(threads: int | None) -> None:
    """Give TensorFlow `threads` intra-op threads and one inter-op thread.

    With W workers on a machine of C cores, `threads = C // W` keeps workers x threads <= cores,
    so workers do not oversubscribe the CPU. Must run before TensorFlow executes any op.
    """
    if threads is None:
        return
    cores = os.cpu_count() or 1
    if threads < 1 or threads > cores:
        raise TuningError(
            f"--threads must be in 1..{cores} (this machine's cores). Received: {threads}"
        )
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def worker_salt() -> int:
    """A number that differs between worker processes, on one machine or many."""
    return zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 1_000_003
