"""Resident memory across many small trials in one process: it must not grow.

Runs the real objective (seed-sized CNNs from the search space, k-fold CV, pruning off) on a
small MNIST slice, and reads the process's resident memory after every trial.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import optuna

from bench.common import rss_mib, save
from tuning.config import load_spec
from tuning.space import CNNHyperModel
from tuning.study import load_training_data, make_objective


def run(*, quick: bool) -> dict[str, Any]:
    trials = 4 if quick else 24
    spec = load_spec("studies/smoke.toml")
    spec = dataclasses.replace(spec, fidelity=dataclasses.replace(spec.fidelity, subset=1000))
    x, y, _ = load_training_data(spec, os.environ.get("TUNING_MNIST"))
    hypermodel = CNNHyperModel(max_epochs=spec.fidelity.max_epochs)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    samples: list[float] = []
    start = time.perf_counter()
    study.optimize(
        make_objective(hypermodel, x, y, spec=spec),
        n_trials=trials,
        callbacks=[lambda s, t: samples.append(rss_mib())],
        gc_after_trial=True,
    )
    # The first trials load TensorFlow's kernels and caches; growth is judged after them.
    warm = samples[min(3, len(samples) - 1)]
    result = {
        "trials": trials,
        "seconds": round(time.perf_counter() - start, 1),
        "rss_mib": [round(v, 1) for v in samples],
        "rss_after_warmup_mib": round(warm, 1),
        "rss_last_mib": round(samples[-1], 1),
        "growth_after_warmup_mib": round(samples[-1] - warm, 1),
        "growth_per_trial_mib": round((samples[-1] - warm) / max(1, trials - 4), 2),
    }
    table = (
        "| trials | RSS after trial 4 (MiB) | RSS at end (MiB) | growth per trial (MiB) |\n"
        "|---:|---:|---:|---:|\n"
        f"| {trials} | {result['rss_after_warmup_mib']} | {result['rss_last_mib']} | "
        f"{result['growth_per_trial_mib']} |"
    )
    save("memory", result, table)
    return result
