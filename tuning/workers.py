"""What changes when several processes work on one study: CPU threads and sampler seeds."""

from __future__ import annotations

import os
import socket
import zlib

from tuning.errors import TuningError

ENV_TRIALS_PER_PROCESS = "TUNING_TRIALS_PER_PROCESS"
TRIALS_PER_PROCESS = 10


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


def trials_per_process() -> int:
    """How many trials one process runs before it replaces itself (`TUNING_TRIALS_PER_PROCESS`).

    TensorFlow keeps every traced training function for the life of the process, even after
    `clear_session()`: about 3 MB per `fit` of a 1-layer net, 14 MB for the seed network (see
    bench/memory.py). Starting afresh every few trials keeps a long study's memory flat.
    """
    raw = os.environ.get(ENV_TRIALS_PER_PROCESS, str(TRIALS_PER_PROCESS))
    if not raw.isdigit() or int(raw) < 1:
        raise TuningError(
            f"{ENV_TRIALS_PER_PROCESS} must be a whole number >= 1. Received: {raw!r}"
        )
    return int(raw)


def continue_in_new_process(argv: list[str], *, done: int, start: float) -> None:
    """Replace this process by `python -m tuning.cli ARGV`, telling it what is already done.

    The process id stays the same (exec), so a supervisor, Ctrl-C and `make` see one program.
    """
    import sys

    carried = [a for a in argv if not a.startswith(("--done-trials=", "--started-at="))]
    carried += [f"--done-trials={done}", f"--started-at={start!r}"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "tuning.cli", *carried])
