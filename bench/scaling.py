"""How the cost of one trial grows with the training subset, the number of folds and the epochs.

The seed network, trained by its seed recipe (`CNNHyperModel.fit` ->
`tuning.training.recipe.train`: batch 32, cosine decay, augmentation, the trial's own training
function) with its epochs set to the configuration's, is scored by `cross_validate` on a grid
around a base configuration, one factor changed
at a time; the configurations run round-robin (order reversed each round) and
the fastest of the rounds is kept for each, the usual way to time on a shared machine. Per epoch,
k-fold CV on a subset of S images trains (k-1)/k * S images per fold, (k-1) * S in all, and
validates S, so trial time should be about

    seconds = a * k + b * (k - 1) * S * epochs + c * S * epochs

(a: building/compiling/clean-up per fold; b: training per image; c: validation per image).
The table gives the measured time relative to the base configuration beside the ratio of trained
images, and the non-negative least-squares fit of the model above with its largest relative
error.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from scipy.optimize import nnls

from bench.common import save
from bench.harness import bench_data, load_average, seed_hp
from tuning.study.space import CNNHyperModel
from tuning.training.cv import cross_validate

SEED = 42


def _grid(quick: bool) -> tuple[dict[str, int], list[tuple[str, dict[str, int]]]]:
    if quick:
        # A proof that the script works. Every fold costs about a second of building and tracing
        # whatever its size, so one change: folds, which moves the per-fold and trained-image
        # terms of the model but not the validated images; 2 epochs in the base, so the trained
        # images depend on each of k, S and epochs.
        base = {"subset": 100, "folds": 2, "epochs": 2}
        changes = [("folds", {"folds": 3})]
    else:
        base = {"subset": 2000, "folds": 2, "epochs": 1}
        changes = [
            ("subset", {"subset": 1000}),
            ("subset", {"subset": 4000}),
            ("epochs", {"epochs": 2}),
            ("epochs", {"epochs": 4}),
            ("folds", {"folds": 3}),
            ("folds", {"folds": 4}),
            ("folds", {"folds": 5}),
        ]
    return base, [("base", {}), *changes]


def _time_trial(
    hypermodel: CNNHyperModel, x: np.ndarray, y: np.ndarray, config: dict[str, int]
) -> float:
    subset, folds, epochs = config["subset"], config["folds"], config["epochs"]
    start = time.perf_counter()
    cross_validate(
        lambda: hypermodel.build(seed_hp()),
        x[:subset],
        y[:subset],
        folds=folds,
        seed=SEED,
        fit=lambda model, xs, ys, **kw: hypermodel.fit(
            seed_hp(), model, xs, ys, epochs=epochs, **kw
        ),
    )
    return time.perf_counter() - start


def run(*, quick: bool) -> dict[str, Any]:
    base, grid = _grid(quick)
    configs = [(factor, {**base, **change}) for factor, change in grid]
    rounds = 1 if quick else 3
    largest = max(c["subset"] for _, c in configs)
    # The largest subset is stratified; its first S images are close to class-balanced too.
    x, y = bench_data(largest, seed=SEED)
    hypermodel = CNNHyperModel(max_epochs=max(c["epochs"] for _, c in configs))
    load_before = load_average()
    if not quick:  # warm-up: TensorFlow start-up and kernels
        _time_trial(hypermodel, x, y, {"subset": 100, "folds": 2, "epochs": 1})
    times: list[list[float]] = [[] for _ in configs]
    for r in range(rounds):
        order = range(len(configs)) if r % 2 == 0 else reversed(range(len(configs)))
        for i in order:
            times[i].append(_time_trial(hypermodel, x, y, configs[i][1]))
    best = [min(t) for t in times]

    def features(c: dict[str, int]) -> list[float]:
        trained = (c["folds"] - 1) * c["subset"] * c["epochs"]
        return [c["folds"], trained, c["subset"] * c["epochs"]]

    design = np.array([features(c) for _, c in configs], dtype=float)
    coef, _ = nnls(design, np.array(best))  # costs are >= 0; plain least squares may go negative
    fitted = design @ coef
    base_trained = design[0][1]
    rows = [
        {
            "factor": factor,
            **config,
            "trained_images": int(design[i][1]),
            "seconds": round(best[i], 2),
            "all_rounds": [round(t, 2) for t in times[i]],
            "ratio_to_base": round(best[i] / best[0], 2),
            "trained_images_ratio": round(design[i][1] / base_trained, 2),
            "fitted_seconds": round(float(fitted[i]), 2),
        }
        for i, (factor, config) in enumerate(configs)
    ]
    max_error = max(abs(r["fitted_seconds"] - r["seconds"]) / r["seconds"] for r in rows)
    fit = {
        "seconds_per_fold": round(float(coef[0]), 3),
        "ms_per_trained_image": round(float(coef[1]) * 1000, 4),
        "ms_per_validated_image": round(float(coef[2]) * 1000, 4),
        "max_relative_error": round(max_error, 3),
    }
    result = {
        "rounds": rounds,
        "load_before": load_before,
        "load_after": load_average(),
        "fit": fit,
        "rows": rows,
    }
    table = (
        f"Seed network, seed recipe (batch 32, augmentation); fastest of {rounds} interleaved "
        "rounds; load average "
        f"before/after {load_before} / {result['load_after']}.\n\n"
        "| changed | subset | folds | epochs | trained images ((k-1)·S·epochs) | trial s "
        "| ratio to base | trained-images ratio | fitted s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    table += "\n".join(
        f"| {r['factor']} | {r['subset']} | {r['folds']} | {r['epochs']} | {r['trained_images']} "
        f"| {r['seconds']} | {r['ratio_to_base']} | {r['trained_images_ratio']} "
        f"| {r['fitted_seconds']} |"
        for r in rows
    )
    table += (
        f"\n\nFit: {fit['seconds_per_fold']} s per fold + {fit['ms_per_trained_image']} ms per "
        f"trained image + {fit['ms_per_validated_image']} ms per validated image; largest "
        f"relative error {fit['max_relative_error']}."
    )
    save("scaling", result, table)
    return result
