"""Helpers shared by the training benchmarks: data, study specs, the seed network, statistics."""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tuning.images.mnist import load_mnist, stratified_subset
from tuning.protocol import Rung
from tuning.study.config import StudySpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STUDY = ROOT / "studies" / "mnist_cnn.toml"


def bench_data(subset: int, *, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """A stratified MNIST training subset with a channel axis, from `$TUNING_MNIST` if set."""
    images = load_mnist(os.environ.get("TUNING_MNIST"), split="train")
    x, y = stratified_subset(images.x, images.y, size=subset, seed=seed)
    return x[..., None], y


def bench_spec(
    *,
    subset: int,
    folds: int,
    max_epochs: int,
    seed: int = 42,
    rungs: Sequence[Rung] = (),
    **search: Any,
) -> StudySpec:
    """The default study file with another fidelity, seed and (optionally) search settings.

    The fidelity is one rung (k-fold CV on `subset` images), or the ladder `rungs` if given."""
    spec = load_spec(DEFAULT_STUDY)
    return dataclasses.replace(
        spec,
        name=f"bench_{seed}",
        seed=seed,
        enqueue_seed=False,
        fidelity=dataclasses.replace(
            spec.fidelity,
            subset=subset,
            folds=folds,
            max_epochs=max_epochs,
            rungs=tuple(rungs),
        ),
        search=dataclasses.replace(spec.search, **search),
    )


def seed_hp() -> Any:
    """KerasTuner hyperparameters left at their defaults: the HyperModel builds the seed network."""
    import keras_tuner as kt

    return kt.HyperParameters()


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages (how busy the shared machine was)."""
    return [round(v, 2) for v in os.getloadavg()]


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min, median and max."""
    return {
        "mean": round(statistics.fmean(values), digits),
        "std": round(statistics.stdev(values), digits) if len(values) > 1 else 0.0,
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }


def pm(stats: dict[str, float], digits: int = 3) -> str:
    """`mean ± std` for a table cell."""
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
