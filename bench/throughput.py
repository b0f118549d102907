"""Training throughput: one trial of our study against a plain `model.fit`, then CPU speed-ups.

Part 1, **loop**: each round trains the seed network by k-fold CV through the study's real
objective (`make_objective` -> `cross_validate`, with its epoch/fold callbacks, Optuna reports,
pruning checks, user attributes in SQLite, `release_memory()` after each fold) and by plain Keras
(`build()` + `model.fit(..., validation_data=...)` per fold, no callbacks, no clean-up inside the
timer). Three more runs per round: our objective as it was before `cross_validate` froze the
long-lived objects out of the garbage collector (`tuning.cv.freeze_long_lived_objects`, disabled
for that run), our objective with the HyperModel built in `mixed_bfloat16`, and a plain fit
without validation, which shows what validation costs. They run
interleaved in one process, the order reversed every round; each round gives a ratio (ours /
plain images per second), and the median over rounds is the figure.

Part 2, **variants**: the seed network on fold 1 of the same split, plain `model.fit`, changed one
way at a time: batch size, a tf.data pipeline, `CNNHyperModel(precision="mixed_bfloat16")`, XLA
(`jit_compile=True`) and `steps_per_execution`. Each round uses its own seed, trains every
variant once (rotated order) and compares it with the float32 / batch-32 baseline of the same
round: speed-up = baseline seconds / variant seconds, and the change in validation accuracy.
Timings include building and compiling the model, as a trial pays them. `--quick` runs one round
and fewer variants, without XLA (its compile alone takes longer than the quick budget).
"""

from __future__ import annotations

import gc
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any
from unittest import mock

import keras
import numpy as np
import optuna
import tensorflow as tf

from bench.common import save
from bench.harness import bench_data, bench_spec, load_average, pm, seed_hp, spread
from tuning.cv import fold_indices, freeze_long_lived_objects, release_memory
from tuning.space import CNNHyperModel, make_optimizer, seed_params
from tuning.storage import open_storage
from tuning.study import make_objective, make_pruner, make_sampler

GOAL = 0.95
QUICK_VARIANTS = {
    "float32, batch 32 (baseline)",
    "batch 128",
    "tf.data pipeline",
    "steps_per_execution=8",
    "mixed_bfloat16 (float32 output)",
}
SEED_BATCH = 32
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("float32, batch 32 (baseline)", {}),
    ("batch 64", {"batch_size": 64}),
    ("batch 128", {"batch_size": 128}),
    ("batch 256", {"batch_size": 256}),
    ("tf.data pipeline", {"pipeline": True}),
    ("steps_per_execution=8", {"steps_per_execution": 8}),
    ("mixed_bfloat16 (float32 output)", {"precision": "mixed_bfloat16"}),
    ("XLA (jit_compile=True)", {"jit_compile": True}),
]


def _ours(
    hypermodel: CNNHyperModel, x: np.ndarray, y: np.ndarray, spec: Any, db: str
) -> tuple[float, float]:
    """One seed-network trial through the study's objective; returns (seconds, CV mean)."""
    study = optuna.create_study(
        storage=open_storage(db),
        study_name=f"throughput-{uuid.uuid4().hex[:8]}",
        direction="maximize",
        sampler=make_sampler(spec),
        pruner=make_pruner(spec),
    )
    study.enqueue_trial(seed_params(spec.fidelity.max_epochs))
    objective = make_objective(hypermodel, x, y, spec=spec)
    start = time.perf_counter()
    study.optimize(objective, n_trials=1)
    seconds = time.perf_counter() - start
    trial = study.trials[-1]
    if trial.state != optuna.trial.TrialState.COMPLETE or trial.value is None:
        raise RuntimeError(f"the seed trial ended {trial.state.name}, not COMPLETE")
    return seconds, float(trial.value)


def _plain(
    hypermodel: CNNHyperModel,
    x: np.ndarray,
    y: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    *,
    epochs: int,
    seed: int,
    validate: bool,
) -> tuple[float, float]:
    """The same folds by plain `model.fit`; returns (seconds in build + fit, CV mean or nan)."""
    seconds, accuracies = 0.0, []
    for fold, (train, val) in enumerate(splits):
        keras.utils.set_random_seed(seed + fold)
        start = time.perf_counter()
        model = hypermodel.build(seed_hp())
        history = model.fit(
            x[train],
            y[train],
            batch_size=SEED_BATCH,
            epochs=epochs,
            validation_data=(x[val], y[val]) if validate else None,
            verbose=0,
        )
        seconds += time.perf_counter() - start
        if validate:
            accuracies.append(history.history["val_accuracy"][-1])
        release_memory()  # outside the timer: a plain script would not pay it
    return seconds, float(np.mean(accuracies)) if accuracies else float("nan")


def _variant(
    hypermodel: CNNHyperModel,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    seed: int,
    options: dict[str, Any],
) -> tuple[float, float]:
    """Seed network trained one way on one fold; returns (seconds, validation accuracy)."""
    batch = options.get("batch_size", SEED_BATCH)
    if "precision" in options:
        hypermodel = CNNHyperModel(max_epochs=epochs, precision=options["precision"])
    try:
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        model = hypermodel.build(seed_hp())
        model.compile(
            optimizer=make_optimizer("adam", 1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=options.get("jit_compile", "auto"),
            steps_per_execution=options.get("steps_per_execution", 1),
        )
        if options.get("pipeline"):
            auto = tf.data.AUTOTUNE
            data = tf.data.Dataset.from_tensor_slices(train).cache()
            data = data.shuffle(len(train[1]), seed=seed).batch(batch).prefetch(auto)
            val_data = tf.data.Dataset.from_tensor_slices(val).cache().batch(batch).prefetch(auto)
            history = model.fit(
                data, epochs=epochs, validation_data=val_data, shuffle=False, verbose=0
            )
        else:
            history = model.fit(
                *train, batch_size=batch, epochs=epochs, validation_data=val, verbose=0
            )
        seconds = time.perf_counter() - start
    finally:
        release_memory()
    return seconds, float(history.history["val_accuracy"][-1])


def _unfrozen(runner: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """Run as the project did before it froze long-lived objects out of the collector.

    `release_memory()` runs a full collection after each fold; unfrozen, each one walks some
    400,000 objects of TensorFlow and Keras. The freeze is restored outside the run's timer.
    """
    gc.unfreeze()
    try:
        with mock.patch("tuning.cv.freeze_long_lived_objects", lambda: None):
            return runner()
    finally:
        freeze_long_lived_objects()


# Our objective, run three ways, each compared with plain `model.fit` of the same round.
OURS = {
    "ours": "our trial (objective, callbacks, SQLite)",
    "ours_unfrozen": "our trial before the fix: nothing frozen out of GC",
    "ours_bf16": 'our trial, `CNNHyperModel(precision="mixed_bfloat16")`',
}


def _loop_part(
    hypermodel: CNNHyperModel, x: np.ndarray, y: np.ndarray, spec: Any, rounds: int
) -> dict[str, Any]:
    fid = spec.fidelity
    splits = fold_indices(y, folds=fid.folds, seed=spec.seed)
    images = sum(len(train) for train, _ in splits) * fid.max_epochs
    bf16 = CNNHyperModel(max_epochs=fid.max_epochs, precision="mixed_bfloat16")
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/throughput.db"
        if rounds > 1:  # warm-up: TF start-up, kernels, SQLite
            _ours(hypermodel, x[:200], y[:200], spec, db)
        runners = {
            "ours": lambda: _ours(hypermodel, x, y, spec, db),
            "ours_unfrozen": lambda: _unfrozen(lambda: _ours(hypermodel, x, y, spec, db)),
            "ours_bf16": lambda: _ours(bf16, x, y, spec, db),
            "plain": lambda: _plain(
                hypermodel, x, y, splits, epochs=fid.max_epochs, seed=spec.seed, validate=True
            ),
            "plain_no_validation": lambda: _plain(
                hypermodel, x, y, splits, epochs=fid.max_epochs, seed=spec.seed, validate=False
            ),
        }
        for r in range(rounds):
            order = list(runners) if r % 2 == 0 else list(reversed(runners))
            got = {name: runners[name]() for name in order}
            plain = got["plain"][0]
            rows.append(
                {
                    **{f"{name}_seconds": round(got[name][0], 2) for name in runners},
                    **{f"{name}_cv_accuracy": round(got[name][1], 4) for name in OURS},
                    "plain_cv_accuracy": round(got["plain"][1], 4),
                    **{f"{name}_ratio": round(plain / got[name][0], 3) for name in OURS},
                    "ours_ratio_vs_no_validation": round(
                        got["plain_no_validation"][0] / got["ours"][0], 3
                    ),
                }
            )
    out: dict[str, Any] = {"images_per_trial": images, "rounds": rows}
    for name in [*OURS, "plain"]:
        out[f"{name}_images_per_second"] = spread([images / r[f"{name}_seconds"] for r in rows], 1)
    for name in OURS:
        out[f"{name}_ratio"] = spread([r[f"{name}_ratio"] for r in rows])
        out[f"{name}_cv_accuracy"] = spread([r[f"{name}_cv_accuracy"] for r in rows], 4)
    out["plain_cv_accuracy"] = spread([r["plain_cv_accuracy"] for r in rows], 4)
    out["ours_ratio_vs_no_validation"] = spread([r["ours_ratio_vs_no_validation"] for r in rows])
    out["goal"] = GOAL
    out["goal_met"] = out["ours_ratio"]["median"] >= GOAL
    return out


def _variant_part(
    hypermodel: CNNHyperModel,
    x: np.ndarray,
    y: np.ndarray,
    spec: Any,
    rounds: int,
    variants: list[tuple[str, dict[str, Any]]],
) -> list[dict[str, Any]]:
    fid = spec.fidelity
    train_idx, val_idx = fold_indices(y, folds=fid.folds, seed=spec.seed)[0]
    train, val = (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])
    images = len(train_idx) * fid.max_epochs
    got: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in variants}
    for r in range(rounds):
        shift = r % len(variants)
        for name, options in variants[shift:] + variants[:shift]:
            got[name].append(
                _variant(hypermodel, train, val, epochs=fid.max_epochs, seed=r, options=options)
            )
    base = got[variants[0][0]]
    return [
        {
            "variant": name,
            "speedup": spread([b[0] / v[0] for b, v in zip(base, runs, strict=True)]),
            "images_per_second": spread([images / v[0] for v in runs], 1),
            "val_accuracy": spread([v[1] for v in runs], 4),
            "accuracy_change": spread([v[1] - b[1] for b, v in zip(base, runs, strict=True)], 4),
        }
        for name, runs in got.items()
    ]


def _table(result: dict[str, Any]) -> str:
    loop, sizes = result["loop"], result["sizes"]
    lines = [
        f"Seed network, {sizes['subset']} images, {sizes['folds']}-fold CV, "
        f"{sizes['epochs']} epochs, batch {SEED_BATCH}; {sizes['rounds']} interleaved rounds; "
        f"load average before/after {result['load_before']} / {result['load_after']}.",
        "",
        "| training loop | images/s (median) | ratio to plain fit, median [min-max] "
        "| CV accuracy |",
        "|---|---:|---:|---:|",
        f"| plain `model.fit` + validation | {loop['plain_images_per_second']['median']} | 1 "
        f"| {loop['plain_cv_accuracy']['mean']:.4f} |",
    ]
    for name, label in OURS.items():
        r = loop[f"{name}_ratio"]
        lines.append(
            f"| {label} | {loop[f'{name}_images_per_second']['median']} | {r['median']} "
            f"[{r['min']}-{r['max']}] | {loop[f'{name}_cv_accuracy']['mean']:.4f} |"
        )
    lines += [
        "",
        "Plain `model.fit` without validation is faster still: our trial / it = "
        f"{loop['ours_ratio_vs_no_validation']['median']} (validating 1/k of the subset each "
        "epoch is part of what a trial must do).",
        "",
        f"Goal, our trial (as the project is now) / plain >= {GOAL}: "
        f"{'met' if loop['goal_met'] else 'NOT met'}.",
        "",
        f"Variants on one fold ({sizes['epochs']} epochs, seeds 0..{sizes['rounds'] - 1}):",
        "",
        "| variant | speed-up vs baseline, median [min-max] | val accuracy (mean ± std) "
        "| accuracy change vs baseline (mean ± std) |",
        "|---|---:|---:|---:|",
    ]
    for row in result["variants"]:
        s = row["speedup"]
        lines.append(
            f"| {row['variant']} | {s['median']} [{s['min']}-{s['max']}] | "
            f"{pm(row['val_accuracy'], 4)} | {pm(row['accuracy_change'], 4)} |"
        )
    return "\n".join(lines)


def run(*, quick: bool) -> dict[str, Any]:
    subset, folds, epochs, rounds = (300, 2, 1, 1) if quick else (3000, 3, 2, 3)
    variants = [v for v in VARIANTS if not quick or v[0] in QUICK_VARIANTS]
    spec = bench_spec(subset=subset, folds=folds, max_epochs=epochs)
    x, y = bench_data(subset, seed=spec.seed)
    hypermodel = CNNHyperModel(max_epochs=epochs)
    load_before = load_average()
    start = time.perf_counter()
    loop = _loop_part(hypermodel, x, y, spec, rounds)
    variant_rows = _variant_part(hypermodel, x, y, spec, rounds, variants)
    result = {
        "sizes": {"subset": subset, "folds": folds, "epochs": epochs, "rounds": rounds},
        "load_before": load_before,
        "load_after": load_average(),
        "seconds": round(time.perf_counter() - start, 1),
        "loop": loop,
        "variants": variant_rows,
    }
    save("throughput", result, _table(result))
    return result
