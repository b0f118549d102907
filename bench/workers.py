"""Trials per hour on this machine: 1 worker x all cores against W workers x (cores / W) threads.

Each layout runs `tuning worker` processes on a fresh SQLite study (one rung: 2-fold CV, recipes
of 1-2 epochs) for the same wall-clock budget; trials that finished in that time are counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
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


def run(*, quick: bool) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    seconds, subset = (20.0, 500) if quick else (240.0, 4000)
    layouts = [(1, cores)] + ([(cores, 1)] if cores > 1 else [])
    rows = [_layout(w, t, seconds, subset) for w, t in layouts]
    table = (
        "| workers x threads | complete trials | wall (s) | trials/hour |\n|---|---:|---:|---:|\n"
    )
    table += "\n".join(
        f"| {r['workers']} x {r['threads_per_worker']} | {r['complete_trials']} | "
        f"{r['wall_seconds']} | {r['trials_per_hour']} |"
        for r in rows
    )
    result = {"budget_seconds": seconds, "subset": subset, "layouts": rows}
    save("workers", result, table)
    return result
