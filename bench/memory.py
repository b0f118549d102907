"""Resident memory across many small trials: does a long study grow?

Two measurements, both with the real objective (seed network, k-fold CV) on a small MNIST slice:
- `in_process`: the same network trained again and again in one process, with clear_session, gc
  and malloc_trim after every fold. TensorFlow keeps each traced training function, so this grows.
- `tuning_study`: `tuning study` itself on the same 24 seed-network trials (enqueued), sampled
  from outside every 0.2 s. It replaces its process (same pid) every TUNING_TRIALS_PER_PROCESS
  trials (default 10); the peak of each process generation shows whether growth is bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from bench.common import rss_mib, save
from bench.harness import ROOT
from tuning.artifacts import ENV_ARTIFACTS
from tuning.images.dataset import load_training
from tuning.records import library_versions
from tuning.study.config import load_spec
from tuning.study.create import open_study
from tuning.study.objective import make_objective, rung_data
from tuning.study.space import CNNHyperModel, seed_params

SMOKE = ROOT / "studies" / "smoke.toml"
STUDY = """
[study]
name = "bench_memory"
[fidelity]
subset = 1000
folds = 2
max_epochs = 1
[search]
pruner = "none"
"""


def _slope(samples: list[float]) -> float:
    """MiB per trial over the second half (least squares), past start-up effects."""
    half = samples[len(samples) // 2 :]
    return round(float(np.polyfit(np.arange(len(half)), half, 1)[0]), 2) if len(half) > 1 else 0.0


def _in_process(trials: int) -> list[float]:
    spec = load_spec(SMOKE)
    spec = dataclasses.replace(
        spec, fidelity=dataclasses.replace(spec.fidelity, subset=1000, rungs=())
    )
    data = rung_data(spec, load_training(spec.data_source(os.environ.get("TUNING_MNIST"))))
    study = optuna.create_study(direction="maximize")
    for _ in range(trials):
        study.enqueue_trial(seed_params(1))
    samples: list[float] = []
    with tempfile.TemporaryDirectory() as artifacts:
        objective = make_objective(
            CNNHyperModel(max_epochs=1),
            data,
            spec=spec,
            versions=library_versions(),
            artifacts=artifacts,
        )
        study.optimize(
            objective,
            n_trials=trials,
            callbacks=[lambda s, t: samples.append(round(rss_mib(), 1))],
        )
    return samples


def _generations(mib: list[float]) -> list[float]:
    """Peak RSS of each process generation; an exec shows as RSS falling below 60% of the peak."""
    peaks: list[float] = []
    peak = 0.0
    for value in mib:
        if peak and value < 0.6 * peak:
            peaks.append(peak)
            peak = 0.0
        peak = max(peak, value)
    return [round(p, 1) for p in [*peaks, peak]]


def _tuning_study(trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        study_file = Path(tmp) / "memory.toml"
        study_file.write_text(STUDY)
        url = f"sqlite:///{tmp}/memory.db"
        spec = load_spec(study_file)
        images = load_training(spec.data_source(os.environ.get("TUNING_MNIST")))
        study, _ = open_study(spec, storage=url, data_sha256=images.sha256)
        for _ in range(trials - 1):  # the seed network is already enqueued once
            study.enqueue_trial(seed_params(1))
        cmd = [sys.executable, "-m", "tuning.cli", "study", str(study_file), "--no-progress"]
        cmd += ["--storage", url, "--trials", str(trials)]
        env = {**os.environ, ENV_ARTIFACTS: str(Path(tmp) / "artifacts")}  # not storage/
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        statm = Path(f"/proc/{proc.pid}/statm")
        samples: list[float] = []
        while proc.poll() is None:
            with contextlib.suppress(OSError, IndexError):
                samples.append(int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
            time.sleep(0.2)
        if proc.returncode != 0:
            raise RuntimeError(f"tuning study exited with {proc.returncode}")
    mib = [s / 2**20 for s in samples if s > 0]  # 0 pages: read while the process exited
    return {
        "trials": trials,
        "peak_rss_mib": round(max(mib), 1),
        "peak_rss_per_process_mib": _generations(mib),
    }


def run(*, quick: bool) -> dict[str, Any]:
    trials = 3 if quick else 24
    start = time.perf_counter()
    in_process = _in_process(trials)
    study = _tuning_study(trials)
    result = {
        "seconds": round(time.perf_counter() - start, 1),
        "in_process_rss_mib": in_process,
        "in_process_growth_mib_per_trial": _slope(in_process),
        "tuning_study": study,
    }
    table = (
        "| measurement | trials | RSS start (MiB) | RSS end / peak (MiB) | growth |\n"
        "|---|---:|---:|---:|---|\n"
        f"| one process, same network | {trials} | {in_process[0]} | {in_process[-1]} | "
        f"{result['in_process_growth_mib_per_trial']} MiB/trial |\n"
        f"| `tuning study`, a new process every 10 trials | {trials} | "
        f"peak per process: {study['peak_rss_per_process_mib']} | "
        f"{study['peak_rss_mib']} (peak) | bounded by the process renewal |"
    )
    save("memory", result, table)
    return result
