"""Resident memory across many small trials in one process: it must not grow.

Runs the real objective (k-fold CV, pruning off) on a small MNIST slice and reads the process's
resident memory after every trial, in two phases:
- `repeat`: the seed network again and again. Any growth here is a leak.
- `varied`: random configurations from the search space. Each new layer shape adds kernels to
  TensorFlow/oneDNN caches, so memory may step up with new shapes and must level off.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np
import optuna

from bench.common import rss_mib, save
from tuning.config import load_spec
from tuning.space import CNNHyperModel, seed_params
from tuning.study import load_training_data, make_objective


def _phase(study: optuna.Study, objective: Any, trials: int) -> list[float]:
    samples: list[float] = []
    study.optimize(
        objective,
        n_trials=trials,
        callbacks=[lambda s, t: samples.append(round(rss_mib(), 1))],
        gc_after_trial=True,
    )
    return samples


def _growth(samples: list[float]) -> float:
    """MiB per trial over the second half (a least-squares slope), past start-up effects."""
    half = samples[len(samples) // 2 :]
    return round(float(np.polyfit(np.arange(len(half)), half, 1)[0]), 2) if len(half) > 1 else 0.0


def run(*, quick: bool) -> dict[str, Any]:
    trials = 4 if quick else 24
    spec = load_spec("studies/smoke.toml")
    spec = dataclasses.replace(spec, fidelity=dataclasses.replace(spec.fidelity, subset=1000))
    x, y, _ = load_training_data(spec, os.environ.get("TUNING_MNIST"))
    hypermodel = CNNHyperModel(max_epochs=spec.fidelity.max_epochs)
    objective = make_objective(hypermodel, x, y, spec=spec)
    start = time.perf_counter()

    repeat = optuna.create_study(direction="maximize")
    for _ in range(trials):
        repeat.enqueue_trial(seed_params(spec.fidelity.max_epochs))
    repeat_rss = _phase(repeat, objective, trials)
    varied = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    varied_rss = _phase(varied, objective, trials)

    result = {
        "trials_per_phase": trials,
        "seconds": round(time.perf_counter() - start, 1),
        "repeat_rss_mib": repeat_rss,
        "repeat_growth_mib_per_trial": _growth(repeat_rss),
        "varied_rss_mib": varied_rss,
        "varied_growth_mib_per_trial": _growth(varied_rss),
    }
    table = (
        "| phase | trials | RSS first (MiB) | RSS last (MiB) | growth, 2nd half (MiB/trial) |\n"
        "|---|---:|---:|---:|---:|\n"
        f"| same network | {trials} | {repeat_rss[0]} | {repeat_rss[-1]} | "
        f"{result['repeat_growth_mib_per_trial']} |\n"
        f"| random networks | {trials} | {varied_rss[0]} | {varied_rss[-1]} | "
        f"{result['varied_growth_mib_per_trial']} |"
    )
    save("memory", result, table)
    return result
