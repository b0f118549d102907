"""What changes when several processes work on one study (CPU threads, sampler seeds), and when
one run goes on in a fresh process (batches of trials)."""

from __future__ import annotations

import os
import socket
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from tuning.errors import TuningError

ENV_TRIALS_PER_PROCESS = "TUNING_TRIALS_PER_PROCESS"
ENV_BATCH = "TUNING_BATCH"  # "done,start", handed from one process of a run to the next
TRIALS_PER_PROCESS = 10


def configure_threads(threads: int | None) -> None:
    """Train on `threads` CPU threads (`tuning.backend.set_cpu_threads`).

    With W workers on a machine of C cores, `threads = C // W` keeps workers x threads <= cores,
    so workers do not oversubscribe the CPU. Must run before the backend computes.
    """
    if threads is None:
        return
    cores = os.cpu_count() or 1
    if threads < 1 or threads > cores:
        raise TuningError(
            f"must be in 1..{cores} (this machine's cores). Received: threads={threads}",
            param="threads",
        )
    from tuning.backend import set_cpu_threads

    set_cpu_threads(threads)


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


@dataclass(frozen=True)
class ProcessBatch:
    """The share of a run's trials that this process runs before it replaces itself.

    A run of N trials goes in batches of `trials_per_process()`; each batch but the last ends by
    exec'ing the same command again, which picks up where it left off from `TUNING_BATCH`
    (trials already done, and when the run started), so its timeout and progress carry on.
    """

    done: int  # trials finished by the earlier processes of this run
    start: float  # `time.monotonic()` when the run began (the same clock in every process)
    size: int  # trials this process runs

    @classmethod
    def begin(cls, n_trials: int) -> ProcessBatch:
        """This process's batch: the first of a run, or the one an earlier process handed on."""
        carried = os.environ.pop(ENV_BATCH, "")
        done, start = 0, time.monotonic()
        if carried:
            try:
                done_text, start_text = carried.split(",")
                done, start = int(done_text), float(start_text)
            except ValueError:
                raise TuningError(
                    f"{ENV_BATCH} is set by tuning itself when a run goes on in a fresh process; "
                    f"unset it. Received: {ENV_BATCH}={carried!r}"
                ) from None
        return cls(done, start, max(0, min(n_trials - done, trials_per_process())))

    def hand_on(
        self,
        argv: list[str],
        *,
        finished: int,
        n_trials: int,
        timeout: float | None,
        before_exec: Callable[[], None] = lambda: None,
    ) -> None:
        """Replace this process by a fresh one for the next batch, unless the run is over: all
        `n_trials` done, a trial of this batch not finished (Ctrl-C, an error), or out of time.

        The process id stays the same (exec), so a supervisor, Ctrl-C and `make` see one program.
        """
        done = self.done + finished
        out_of_time = timeout is not None and time.monotonic() - self.start >= timeout
        if done >= n_trials or finished < self.size or out_of_time:
            return
        before_exec()
        sys.stdout.flush()
        sys.stderr.flush()
        env = {**os.environ, ENV_BATCH: f"{done},{self.start!r}"}
        os.execve(sys.executable, [sys.executable, "-m", "tuning.cli", *argv], env)
