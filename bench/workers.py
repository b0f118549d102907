"""Trials per hour on this machine: k workers x (cores / k) threads each, for several k.

On a CPU, k = 1 (all cores in one worker) against k = cores (one thread each). On a GPU, k = 1,
2 and 4 workers share the one GPU (each takes GPU memory as it needs it), since one small CNN at
batch 32 leaves most of a big GPU idle. Each layout runs `tuning worker` processes on a fresh
SQLite study (one rung: 2-fold CV, recipes of 1-2 epochs) for the same wall-clock budget; trials
that finished are counted.

`python -m bench workers [--quick]`, or `python -m bench.workers --counts 1 2 4 --seconds 90`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.common import save
from tuning.artifacts import ENV_ARTIFACTS

STUDY = """
[study]
name = "bench_workers"
seed = 3
enqueue_seed = false

[fidelity]
subset = {subset}
folds = 2
max_epochs = 2

[search]
sampler = "random"
pruner = "none"
"""


def _layout(workers: int, threads: int, seconds: float, subset: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        study_file = Path(tmp) / "bench.toml"
        study_file.write_text(STUDY.format(subset=subset))
        url = f"sqlite:///{tmp}/bench.db"
        cmd = [sys.executable, "-m", "tuning.cli", "worker", str(study_file), "--storage", url]
        cmd += ["--threads", str(threads), "--timeout", str(seconds), "--trials", "10000"]
        cmd += ["--no-progress"]
        env = {**os.environ, ENV_ARTIFACTS: str(Path(tmp) / "artifacts")}  # not storage/
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
            )
            for _ in range(workers)
        ]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"worker failed: {err.strip().splitlines()[-1]}")
        wall = time.perf_counter() - start
        trials = optuna.load_study(study_name="bench_workers", storage=url).trials
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        # Count trials finished inside the budget; the last ones may run past it.
        return {
            "workers": workers,
            "threads_per_worker": threads,
            "wall_seconds": round(wall, 1),
            "complete_trials": len(done),
            "trials_per_hour": round(len(done) / wall * 3600, 1),
            "failed_trials": sum(t.state == TrialState.FAIL for t in trials),
        }


def run(
    *,
    quick: bool,
    counts: Sequence[int] | None = None,
    seconds: float | None = None,
    subset: int | None = None,
) -> dict[str, Any]:
    from tuning.device import detect

    cores, device = os.cpu_count() or 1, detect()
    seconds = seconds or (20.0 if quick else 240.0)
    subset = subset or (500 if quick else 4000)
    if counts is None:
        counts = (1, 2, 4) if device.gpus else (1, cores) if cores > 1 else (1,)
    layouts = [(k, max(1, cores // k)) for k in counts]
    rows = [_layout(w, t, seconds, subset) for w, t in layouts]
    table = f"{device.describe()}, {seconds:g} s per layout, subset {subset}\n\n"
    table += (
        "| workers x threads | complete trials | wall (s) | trials/hour |\n|---|---:|---:|---:|\n"
    )
    table += "\n".join(
        f"| {r['workers']} x {r['threads_per_worker']} | {r['complete_trials']} | "
        f"{r['wall_seconds']} | {r['trials_per_hour']} |"
        for r in rows
    )
    result = {"device": device.describe(), "budget_seconds": seconds, "subset": subset}
    save("workers", {**result, "layouts": rows}, table)
    print(table, flush=True)
    return {**result, "layouts": rows}


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python -m bench.workers` (the device check's test parses its calls)."""
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", help="workers per layout")
    parser.add_argument("--seconds", type=float, help="wall-clock budget per layout")
    parser.add_argument("--subset", type=int, help="training images of the study")
    parser.add_argument("--quick", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run(quick=args.quick, counts=args.counts, seconds=args.seconds, subset=args.subset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
