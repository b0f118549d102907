"""Training throughput of the one training recipe (`tuning.training.recipe.train`), issue 10's
question: is the recipe, augmentation included, faster than what trials did before, at a
realistic fold size?

Part 1, **variants**: the seed network on fold 1 of a 3-fold split of a 15,000-image stratified
subset (10,000 training images, 5,000 validation images), trained five ways:

- *before*: what a trial did before the recipe: `build()`, then `model.compile` with Adam 1e-3
  and sparse categorical cross-entropy, then plain `model.fit(x, y, batch_size=32,
  validation_data=...)` on the NumPy arrays (one batch per call into the training step);
- *recipe, no augmentation*: `tuning.training.recipe.train` with the seed recipe, rotation,
  shift and zoom 0;
- *recipe*: `tuning.training.recipe.train` with the seed recipe (cosine decay, rotation 10,
  shift and zoom 0.1): what a trial and `tuning export` run now;
- *recipe, steps_per_execution=1*: the seed recipe, one batch per call, to show what
  `STEPS_PER_EXECUTION = 16` buys;
- *recipe, mixed_bfloat16*: the seed recipe on `CNNHyperModel(precision="mixed_bfloat16")`.
  The full run skips it on a CPU without AVX512-BF16 or AMX (and no GPU), where bfloat16 is
  emulated at a fraction of float32's speed and would alone take longer than the other four
  (about 4x slower per image in a quick run on such a CPU); `--quick` always runs it.

Each round uses its own seed (the same initial weights for every variant of the round) and runs
every variant once, the order rotated by one each round. Per round: the speed-up of each variant
over *before* (seconds of *before* / seconds of the variant), the share of a training step that
augmentation costs ((t_aug - t_noaug) / t_aug, training seconds of *recipe* and *recipe, no
augmentation*), and the change in validation accuracy; the table gives the median and spread
over rounds. Two clocks: *fold* seconds, from `build()` to the end of `fit` (building,
compiling, tracing, training and validating: what a trial pays per fold, on which the speed-up
goal is judged), and *training* seconds, each epoch from its start to its validation (a
callback), on which the augmentation share is judged. Goals: the recipe >= 1.6x *before*;
augmentation <= 15 % of a training step; validation accuracy equal within noise (reported, not
judged: the recipes differ in schedule and augmentation, which a 2-epoch run may show).

Part 2, **loop**: what the study's objective adds around the recipe. Each round scores the seed
network by k-fold CV through `tuning.study.objective.make_objective` (one rung; Optuna asks and
reports, user attributes in SQLite, `cross_validate`'s clean-up after each fold, the curves
artifacts) and by the bare recipe on the same folds (`build()` + `CNNHyperModel.fit`, nothing
else, clean-up outside the timer), in alternating order; the ratio (bare seconds / ours) should
stay >= 0.95. It is cheap (small subset, 2 rounds) and kept for that reason. The parts this
benchmark measured before the recipe existed are dropped: the objective with the garbage
collector unfrozen (that fix is in `tuning.training.cv` for good), the objective in `mixed_bfloat16`
(part 1 now times bfloat16 on the recipe), plain fit without validation, and the single-change
variants of plain `model.fit` (batch sizes, a bare tf.data pipeline, `steps_per_execution=8`,
XLA), which the recipe replaced.

`--quick`: one round of 1 epoch on a 300-image subset (200 training images), every variant, and
a loop on one fold of a 2-fold split of 200 images: a proof that the script works, in seconds;
its img/s say nothing about a full fold (tracing dominates). The full run
(2 rounds x 5 variants x 2 epochs x 10,000 images, then 2 rounds of the loop on 3,000 images)
trains about 250,000 images: 6-9 minutes on 2 idle CPU cores at the seed network's 600-950
img/s (a minute less where bfloat16 is skipped; more on a machine busy with other work).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import uuid
from typing import Any

import keras
import numpy as np
import optuna

from bench.common import save
from bench.harness import bench_data, bench_spec, load_average, pm, seed_hp, spread
from tuning.device import BF16_CPU_FLAGS, detect
from tuning.memory import release_memory
from tuning.protocol import Rung
from tuning.records import library_versions
from tuning.storage import open_storage
from tuning.study.config import StudySpec
from tuning.study.objective import RungData, make_objective
from tuning.study.sampling import make_pruner, make_sampler
from tuning.study.space import CNNHyperModel, seed_params
from tuning.training.cv import fold_indices
from tuning.training.recipe import STEPS_PER_EXECUTION, Recipe, train

SEED_BATCH = 32
GOAL_SPEEDUP = 1.6  # the recipe against `before`, fold seconds
GOAL_AUGMENT_SHARE = 0.15  # of a training step
LOOP_GOAL = 0.95  # our objective / the bare recipe, images per second
# Variant key -> label. The first is the reference of every ratio.
VARIANTS = {
    "before": "before: plain `model.fit` on arrays, Adam 1e-3, batch 32",
    "no_augment": "recipe, no augmentation",
    "recipe": "recipe (seed recipe, with augmentation)",
    "spe1": "recipe, steps_per_execution=1",
    "bf16": "recipe, mixed_bfloat16",
}
GOAL_VARIANT = "recipe"


class TrainClock(keras.callbacks.Callback):
    """Seconds spent training: each epoch from its start to its validation (or its end)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self._start: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._stop()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None


def seed_recipe(epochs: int) -> Recipe:
    """The seed network's recipe (`CNNHyperModel.recipe` at its defaults) for `epochs` epochs."""
    return dataclasses.replace(CNNHyperModel().recipe(seed_hp()), epochs=epochs)


def _train_variant(
    name: str,
    train_data: tuple[np.ndarray, np.ndarray],
    val_data: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    seed: int,
) -> dict[str, float]:
    """The seed network trained one way on one fold: fold and training seconds, val accuracy."""
    recipe = seed_recipe(epochs)
    precision = "mixed_bfloat16" if name == "bf16" else "float32"
    hypermodel = CNNHyperModel(max_epochs=epochs, precision=precision)
    clock = TrainClock()
    try:
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        model = hypermodel.build(seed_hp())
        if name == "before":
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            history = model.fit(
                *train_data,
                batch_size=SEED_BATCH,
                epochs=epochs,
                validation_data=val_data,
                callbacks=[clock],
                verbose=0,
            )
        else:
            if name == "no_augment":
                recipe = dataclasses.replace(recipe, rotation=0.0, shift=0.0, zoom=0.0)
            history = train(
                model,
                recipe,
                *train_data,
                validation_data=val_data,
                callbacks=[clock],
                seed=seed,
                steps_per_execution=1 if name == "spe1" else STEPS_PER_EXECUTION,
            )
        seconds = time.perf_counter() - start
    finally:
        release_memory()
    return {
        "seconds": round(seconds, 3),
        "train_seconds": round(clock.seconds, 3),
        "val_accuracy": round(float(history.history["val_accuracy"][-1]), 4),
    }


def _variant_part(
    x: np.ndarray,
    y: np.ndarray,
    *,
    folds: int,
    epochs: int,
    rounds: int,
    warm_up: bool,
    skipped: dict[str, str],
) -> dict[str, Any]:
    train_idx, val_idx = fold_indices(y, folds=folds, seed=42)[0]
    train_data, val_data = (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])
    images = len(train_idx) * epochs
    if warm_up:  # TensorFlow start-up, kernels, tf.data: paid once per process, not per fold
        small = (train_data[0][:256], train_data[1][:256])
        for name in ("before", "recipe"):
            _train_variant(name, small, val_data, epochs=1, seed=0)
    names = [name for name in VARIANTS if name not in skipped]
    per_round: list[dict[str, dict[str, float]]] = []
    for r in range(rounds):
        shift = r % len(names)
        got = {
            name: _train_variant(name, train_data, val_data, epochs=epochs, seed=r)
            for name in names[shift:] + names[:shift]
        }
        per_round.append({name: got[name] for name in names})
    base = [g["before"] for g in per_round]
    rows: list[dict[str, Any]] = []
    for name, label in VARIANTS.items():
        if name in skipped:
            rows.append({"variant": name, "label": label, "skipped": skipped[name]})
            continue
        runs = [g[name] for g in per_round]
        rows.append(
            {
                "variant": name,
                "label": label,
                "images_per_second": spread([images / v["seconds"] for v in runs], 1),
                "training_images_per_second": spread(
                    [images / v["train_seconds"] for v in runs], 1
                ),
                "speedup": spread(
                    [b["seconds"] / v["seconds"] for b, v in zip(base, runs, strict=True)]
                ),
                "training_speedup": spread(
                    [
                        b["train_seconds"] / v["train_seconds"]
                        for b, v in zip(base, runs, strict=True)
                    ]
                ),
                "val_accuracy": spread([v["val_accuracy"] for v in runs], 4),
                "accuracy_change": spread(
                    [
                        v["val_accuracy"] - b["val_accuracy"]
                        for b, v in zip(base, runs, strict=True)
                    ],
                    4,
                ),
            }
        )
    share = spread(
        [
            (g["recipe"]["train_seconds"] - g["no_augment"]["train_seconds"])
            / g["recipe"]["train_seconds"]
            for g in per_round
        ]
    )
    speedup = next(r["speedup"] for r in rows if r["variant"] == GOAL_VARIANT)
    return {
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "rounds": per_round,
        "rows": rows,
        "augmentation_share": share,
        "goal_speedup": GOAL_SPEEDUP,
        "goal_speedup_met": speedup["median"] >= GOAL_SPEEDUP,
        "goal_augmentation_share": GOAL_AUGMENT_SHARE,
        "goal_augmentation_share_met": share["median"] <= GOAL_AUGMENT_SHARE,
    }


def _ours(
    hypermodel: CNNHyperModel,
    data: list[RungData],
    spec: StudySpec,
    *,
    db: str,
    artifacts: str,
    versions: dict[str, str],
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
    objective = make_objective(hypermodel, data, spec=spec, versions=versions, artifacts=artifacts)
    start = time.perf_counter()
    study.optimize(objective, n_trials=1)
    seconds = time.perf_counter() - start
    trial = study.trials[-1]
    if trial.state != optuna.trial.TrialState.COMPLETE or trial.value is None:
        raise RuntimeError(f"the seed trial ended {trial.state.name}, not COMPLETE")
    return seconds, float(trial.value)


def _bare(
    hypermodel: CNNHyperModel,
    x: np.ndarray,
    y: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    *,
    seed: int,
) -> tuple[float, float]:
    """The same folds by `build()` + the recipe alone; returns (seconds in build + fit, CV mean).

    Seeds as `cross_validate` sets them, so both train the same models."""
    seconds, accuracies = 0.0, []
    for fold, (train_idx, val_idx) in enumerate(splits):
        keras.utils.set_random_seed(seed + fold)
        start = time.perf_counter()
        model = hypermodel.build(seed_hp())
        history = hypermodel.fit(
            seed_hp(),
            model,
            x[train_idx],
            y[train_idx],
            validation_data=(x[val_idx], y[val_idx]),
        )
        seconds += time.perf_counter() - start
        accuracies.append(history.history["val_accuracy"][-1])
        release_memory()  # outside the timer: a bare script would not pay it
    return seconds, float(np.mean(accuracies))


def _loop_part(x: np.ndarray, y: np.ndarray, spec: StudySpec, rounds: int) -> dict[str, Any]:
    fid = spec.fidelity
    (rung,) = fid.ladder
    # The folds the objective runs (all of them but in `--quick`), so both train the same ones.
    splits = fold_indices(y, folds=rung.folds, seed=spec.seed)[: rung.folds_run]
    images = sum(len(train_idx) for train_idx, _ in splits) * fid.max_epochs
    hypermodel = CNNHyperModel(max_epochs=fid.max_epochs)
    data = [RungData(rung, x, y)]
    versions = library_versions()
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        db, artifacts = f"sqlite:///{tmp}/throughput.db", f"{tmp}/artifacts"

        def ours() -> tuple[float, float]:
            return _ours(hypermodel, data, spec, db=db, artifacts=artifacts, versions=versions)

        def bare() -> tuple[float, float]:
            return _bare(hypermodel, x, y, splits, seed=spec.seed)

        if rounds > 1:  # warm-up: SQLite, the artifact store, matplotlib
            _ours(
                hypermodel,
                [RungData(dataclasses.replace(rung, subset=200), x[:200], y[:200])],
                spec,
                db=db,
                artifacts=artifacts,
                versions=versions,
            )
        for r in range(rounds):
            order = [("ours", ours), ("bare", bare)]
            got = dict((name, run()) for name, run in (order if r % 2 == 0 else order[::-1]))
            rows.append(
                {
                    "ours_seconds": round(got["ours"][0], 2),
                    "bare_seconds": round(got["bare"][0], 2),
                    "ours_cv_accuracy": round(got["ours"][1], 4),
                    "bare_cv_accuracy": round(got["bare"][1], 4),
                    "ratio": round(got["bare"][0] / got["ours"][0], 3),
                }
            )
    out: dict[str, Any] = {"images_per_trial": images, "rounds": rows}
    for name in ("ours", "bare"):
        out[f"{name}_images_per_second"] = spread([images / r[f"{name}_seconds"] for r in rows], 1)
        out[f"{name}_cv_accuracy"] = spread([r[f"{name}_cv_accuracy"] for r in rows], 4)
    out["ratio"] = spread([r["ratio"] for r in rows])
    out["goal"] = LOOP_GOAL
    out["goal_met"] = out["ratio"]["median"] >= LOOP_GOAL
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _table(result: dict[str, Any]) -> str:
    sizes, variants, loop = result["sizes"], result["variants"], result["loop"]
    share = variants["augmentation_share"]
    lines = [
        f"{'QUICK RUN (sizes too small to judge the goals). ' if result['quick'] else ''}"
        f"Seed network on fold 1 of a {sizes['folds']}-fold split of {sizes['subset']:,} "
        f"images ({variants['train_images']:,} training, {variants['val_images']:,} "
        f"validation), epochs: {sizes['epochs']}; rounds: {sizes['rounds']}, order rotated; "
        f"load average before/after {result['load_before']} / {result['load_after']}.",
        "",
        "| variant | fold img/s (median) | speed-up vs before, median [min-max] "
        "| training img/s (median) | training speed-up | val accuracy (mean ± std) "
        "| change vs before (mean ± std) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in variants["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['label']} | skipped: {row['skipped']} | | | | | |")
            continue
        s, t = row["speedup"], row["training_speedup"]
        lines.append(
            f"| {row['label']} | {row['images_per_second']['median']} | {s['median']} "
            f"[{s['min']}-{s['max']}] | {row['training_images_per_second']['median']} "
            f"| {t['median']} | {pm(row['val_accuracy'], 4)} | {pm(row['accuracy_change'], 4)} |"
        )
    goal_speedup = next(r["speedup"] for r in variants["rows"] if r["variant"] == GOAL_VARIANT)
    run_folds = f"{sizes['loop_run_folds']} fold of " if "loop_run_folds" in sizes else ""
    lines += [
        "",
        "Fold img/s: training images x epochs / seconds from `build()` to the end of `fit` "
        "(build, compile, trace, train, validate). Training img/s: the same images / seconds "
        "from each epoch's start to its validation.",
        "",
        f"Goal, the recipe >= {GOAL_SPEEDUP}x before (fold seconds): median "
        f"{goal_speedup['median']} [{goal_speedup['min']}-{goal_speedup['max']}], "
        f"{_met(variants['goal_speedup_met'])}.",
        f"Goal, augmentation <= {GOAL_AUGMENT_SHARE:.0%} of a training step "
        "((t_aug - t_noaug) / t_aug): median "
        f"{share['median']:.1%} [{share['min']:.1%} to {share['max']:.1%}], "
        f"{_met(variants['goal_augmentation_share_met'])}.",
        "",
        f"Loop: {loop['images_per_trial']:,} trained images per trial ({sizes['loop_subset']} "
        f"images, {run_folds}{sizes['loop_folds']}-fold CV, epochs: {sizes['epochs']}), "
        f"rounds: {sizes['loop_rounds']}.",
        "",
        "| training loop | img/s (median) | ratio to bare recipe, median [min-max] | CV accuracy |",
        "|---|---:|---:|---:|",
        f"| bare recipe (`build()` + `CNNHyperModel.fit`) | "
        f"{loop['bare_images_per_second']['median']} | 1 "
        f"| {loop['bare_cv_accuracy']['mean']:.4f} |",
        f"| our trial (objective, Optuna, SQLite, artifacts) | "
        f"{loop['ours_images_per_second']['median']} | {loop['ratio']['median']} "
        f"[{loop['ratio']['min']}-{loop['ratio']['max']}] | "
        f"{loop['ours_cv_accuracy']['mean']:.4f} |",
        "",
        f"Goal, our trial / bare recipe >= {LOOP_GOAL}: {_met(loop['goal_met'])}.",
    ]
    return "\n".join(lines)


def run(*, quick: bool) -> dict[str, Any]:
    if quick:
        # Each fold costs about a second of building and tracing whatever its size, so the quick
        # run trains few images and, in the loop, one fold of two: enough to prove the script.
        sizes = {"subset": 300, "folds": 3, "epochs": 1, "rounds": 1}
        loop_sizes = {"loop_subset": 200, "loop_folds": 2, "loop_run_folds": 1, "loop_rounds": 1}
    else:
        sizes = {"subset": 15_000, "folds": 3, "epochs": 2, "rounds": 2}
        loop_sizes = {"loop_subset": 3000, "loop_folds": 3, "loop_rounds": 2}
    load_before = load_average()
    start = time.perf_counter()
    x, y = bench_data(sizes["subset"])
    device = detect()
    skipped: dict[str, str] = {}
    if not quick and not device.gpus and not device.cpu_flags & set(BF16_CPU_FLAGS):
        skipped["bf16"] = (
            f"{device.describe()} has no AVX512-BF16 or AMX, so bfloat16 is emulated (several "
            "times slower; precision `auto` picks float32 here); run `--quick` to see it"
        )
    variants = _variant_part(
        x,
        y,
        folds=sizes["folds"],
        epochs=sizes["epochs"],
        rounds=sizes["rounds"],
        warm_up=not quick,
        skipped=skipped,
    )
    subset, folds = loop_sizes["loop_subset"], loop_sizes["loop_folds"]
    run_folds = loop_sizes.get("loop_run_folds")  # quick: one fold; else the default, all
    spec = bench_spec(
        subset=subset,
        folds=folds,
        max_epochs=sizes["epochs"],
        rungs=(Rung(subset, folds, run_folds=run_folds),) if run_folds else (),
    )
    x_loop, y_loop = bench_data(subset, seed=spec.seed)
    loop = _loop_part(x_loop, y_loop, spec, loop_sizes["loop_rounds"])
    result = {
        "quick": quick,
        "sizes": {**sizes, **loop_sizes},
        "load_before": load_before,
        "load_after": load_average(),
        "seconds": round(time.perf_counter() - start, 1),
        "variants": variants,
        "loop": loop,
    }
    save("throughput", result, _table(result))
    return result
