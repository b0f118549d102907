"""Search efficiency: our study (the default study's sampler and pruner, over a ladder of rungs)
against KerasTuner Hyperband and RandomSearch, on the same HyperModel, the same final score and
the same budget of trained images.

- **Score.** A configuration's score is `tuning.training.cv.cross_validate`'s mean over the same
  stratified folds of the same training subset (a seed fixes subset, folds and weights), trained
  by the configuration's own recipe (`CNNHyperModel.fit` -> `tuning.training.recipe.train`).
  For ours this is the top rung of the ladder; only that score is compared.
- **Compute** is counted the same way for all three: every epoch trained is worth the images it
  trained on (*image-epochs*: one epoch on a fold's 750 training images counts 750), counted by a
  callback in the HyperModel's `fit`. The budget is given in *fold-epochs of the top rung* (one
  epoch on one fold's training part of the full subset) and converted to image-epochs, so a
  cheap rung of ours costs what it trains, no more. An epoch that would take a searcher past the
  budget is never started (the trial it belongs to is dropped), so no searcher spends more.
- **Ours**: `make_sampler` / `make_pruner` / `make_objective` of the default study file, with a
  small rung ladder for the bench (`bench_ladder`: one fold of a third of the subset for a third
  of the epochs, one fold of the subset, then all its folds = the common score), the seed and
  `n_startup_trials` scaled down to the budget (all three build in float32, whatever the study
  file's precision). The seed network is not enqueued (KerasTuner has no such head start).
  Pruned trials spend image-epochs but give no score; rung scores below the top are not compared.
- **KerasTuner**: `kt.Hyperband` and `kt.RandomSearch` subclassed so `run_trial` returns the same
  CV mean. Hyperband's `tuner/epochs` replaces the sampled `epochs` (the recipe's `fit` takes
  `epochs`); a trial it promotes continues its parent's weights, fold by fold, and trains only
  the new `tuner/epochs - tuner/initial_epoch` epochs (so only those are counted). The recipe
  lays its learning-rate schedule over the epochs it is given, so a continued trial restarts
  the schedule for its new epochs (a warm restart, where plain Keras would resume a constant
  rate). RandomSearch trains each configuration for its sampled `epochs`.

Every searcher scores through `cross_validate`, so all of them get its one-time `gc.freeze()` of
long-lived objects (wall-clock only; compute is counted in image-epochs).

Per searcher and seed: the best CV accuracy within the budget and the image-epochs at which it
was first reached; across searchers: the image-epochs each needed to reach KerasTuner
Hyperband's best (our goal: at most half of what Hyperband needed) and to reach a common target
(the lowest of the three bests, so every searcher reaches it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import optuna

from bench.common import save
from bench.harness import bench_spec, load_average, spread
from tuning.errors import TrainingDivergedError
from tuning.images.dataset import load_training
from tuning.protocol import Rung
from tuning.records import library_versions
from tuning.study.config import StudySpec
from tuning.study.objective import RungData, make_objective, rung_data
from tuning.study.sampling import make_pruner, make_sampler
from tuning.study.space import CNNHyperModel
from tuning.training.cv import cross_validate, fold_indices

SEARCHERS = ("ours", "kt_hyperband", "kt_random")
OBJECTIVE = "cv_accuracy"


class BudgetSpent(kt.errors.FatalError):
    """The searcher has used its image-epochs; KerasTuner lets a FatalError end `search`."""


def bench_ladder(subset: int, folds: int, *, quick: bool) -> tuple[Rung, ...]:
    """Our rungs, cheapest first; the top one is the score every searcher is compared on."""
    top = Rung(subset, folds)
    if quick:
        # Two rungs, so a trial of the tiny quick budget can still finish: one fold, then all.
        # Rung 0 on the whole subset, as dear in images as a fold of the top: every fold costs
        # about a second of tracing whatever its size, and a cheaper rung 0 only buys more
        # pruned trials within the budget.
        return Rung(subset, folds, run_folds=1), top
    return (
        Rung(subset // 3, folds, run_folds=1, epoch_scale=1 / 3),
        Rung(subset, folds, run_folds=1),
        top,
    )


class Ledger:
    """Image-epochs spent and the best score so far, after every scored trial."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.spent = 0
        self.start = time.perf_counter()
        self.trace: list[dict[str, Any]] = []
        self.best = float("-inf")
        self.continued = 0  # KerasTuner Hyperband trials that went on from a parent's weights

    def record(self, score: float | None) -> None:
        """Close a trial: `score` is its CV mean, None if it was pruned or failed."""
        if score is not None:
            self.best = max(self.best, score)
        self.trace.append(
            {
                "image_epochs": self.spent,
                "seconds": round(time.perf_counter() - self.start, 1),
                "score": None if score is None else round(score, 4),
                "best": None if self.best == float("-inf") else round(self.best, 4),
            }
        )

    def spent_to_reach(self, target: float) -> int | None:
        """Image-epochs spent when the best first reached `target`; None if it never did."""
        for point in self.trace:
            if point["best"] is not None and point["best"] >= round(target, 4) - 1e-9:
                return int(point["image_epochs"])
        return None


class _EpochCounter(keras.callbacks.Callback):
    """Counts each epoch as the `images` it trains on; refuses one that would pass the budget."""

    def __init__(self, ledger: Ledger, images: int) -> None:
        super().__init__()
        self.ledger = ledger
        self.images = images

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.ledger.spent + self.images > self.ledger.budget:
            raise BudgetSpent(f"budget of {self.ledger.budget} image-epochs spent")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.ledger.spent += self.images


class CountingHyperModel(CNNHyperModel):
    """The project's HyperModel; its `fit` (the recipe) counts image-epochs and keeps the budget."""

    def __init__(self, ledger: Ledger, *, max_epochs: int) -> None:
        super().__init__(max_epochs=max_epochs)
        self.ledger = ledger

    def fit(
        self, hp: Any, model: keras.Model, x: np.ndarray, y: np.ndarray, **kwargs: Any
    ) -> keras.callbacks.History:
        counter = _EpochCounter(self.ledger, len(x))
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), counter]
        return super().fit(hp, model, x, y, **kwargs)


class _CrossValidated:
    """Mixin for a KerasTuner tuner: a trial's score is our k-fold CV mean."""

    hypermodel: CountingHyperModel
    cv: dict[str, Any]

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        hp = trial.hyperparameters
        ledger: Ledger = self.hypermodel.ledger
        if ledger.spent >= ledger.budget:
            raise BudgetSpent("budget spent")
        values = hp.values
        parent = values.get("tuner/trial_id")
        extra: dict[str, int] = {}
        if "tuner/epochs" in values:
            # Hyperband: up to its epochs; a promoted trial trains only the epochs its parent
            # has not (tuner/initial_epoch is 0 for a new one).
            extra = {"epochs": values["tuner/epochs"] - values["tuner/initial_epoch"]}
        weights: Path = self.cv["weights"]
        fold = {"n": -1}

        def build() -> keras.Model:
            fold["n"] += 1
            model = self.hypermodel.build(hp)
            if parent is not None:
                ledger.continued += fold["n"] == 0
                with open(weights / f"{parent}-{fold['n']}.pkl", "rb") as handle:
                    model.set_weights(pickle.load(handle))
            return model

        def fit(model: keras.Model, xs: np.ndarray, ys: np.ndarray, **kw: Any) -> Any:
            history = self.hypermodel.fit(hp, model, xs, ys, **extra, **kw)
            if extra and values["tuner/epochs"] < self.hypermodel.max_epochs:  # may continue
                with open(weights / f"{trial.trial_id}-{fold['n']}.pkl", "wb") as handle:
                    pickle.dump(model.get_weights(), handle)
            return history

        try:
            result = cross_validate(
                build,
                self.cv["x"],
                self.cv["y"],
                folds=self.cv["folds"],
                seed=self.cv["seed"],
                fit=fit,
            )
        except TrainingDivergedError:
            ledger.record(None)
            raise
        ledger.record(result.mean)
        return {OBJECTIVE: result.mean}


class CVHyperband(_CrossValidated, kt.Hyperband):
    """KerasTuner Hyperband scored by our k-fold CV."""


class CVRandomSearch(_CrossValidated, kt.RandomSearch):
    """KerasTuner RandomSearch scored by our k-fold CV."""


def _run_ours(spec: StudySpec, data: list[RungData], ledger: Ledger, tmp: Path) -> None:
    hypermodel = CountingHyperModel(ledger, max_epochs=spec.fidelity.max_epochs)
    study = optuna.create_study(  # a fixed name: Hyperband assigns brackets by a hash of it
        study_name=spec.name,
        direction="maximize",
        sampler=make_sampler(spec),
        pruner=make_pruner(spec),
    )

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            ledger.record(trial.value)
        elif trial.state == optuna.trial.TrialState.PRUNED or (
            trial.state == optuna.trial.TrialState.FAIL and "fail_reason" in trial.user_attrs
        ):
            ledger.record(None)

    objective = make_objective(
        hypermodel, data, spec=spec, versions=library_versions(), artifacts=tmp / "artifacts"
    )
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the last, cut-off trial logs a failure
    try:
        with contextlib.suppress(BudgetSpent):
            study.optimize(
                objective,
                n_trials=100_000,
                catch=(TrainingDivergedError,),
                callbacks=[after],
                gc_after_trial=True,
            )
    finally:
        optuna.logging.set_verbosity(verbosity)


def _run_kt(
    kind: str,
    spec: StudySpec,
    x: np.ndarray,
    y: np.ndarray,
    ledger: Ledger,
    tmp: Path,
    factor: int,
) -> None:
    fid = spec.fidelity
    hypermodel = CountingHyperModel(ledger, max_epochs=fid.max_epochs)
    common: dict[str, Any] = {
        "objective": kt.Objective(OBJECTIVE, direction="max"),
        "seed": spec.seed,
        "directory": str(tmp),
        "project_name": kind,
        "overwrite": True,
    }
    tuner: CVHyperband | CVRandomSearch
    if kind == "kt_hyperband":
        tuner = CVHyperband(
            hypermodel,
            max_epochs=fid.max_epochs,
            factor=factor,
            hyperband_iterations=10_000,
            **common,
        )
    else:
        tuner = CVRandomSearch(hypermodel, max_trials=100_000, **common)
    weights = tmp / f"{kind}-weights"
    weights.mkdir()
    tuner.cv = {"x": x, "y": y, "folds": fid.folds, "seed": spec.seed, "weights": weights}
    with contextlib.suppress(BudgetSpent):
        tuner.search(verbose=0)


def _one_seed(
    seed: int,
    *,
    subset: int,
    folds: int,
    max_epochs: int,
    budget_fold_epochs: int,
    startup: int,
    factor: int,
    quick: bool,
) -> dict[str, Any]:
    spec = bench_spec(
        subset=subset,
        folds=folds,
        max_epochs=max_epochs,
        seed=seed,
        rungs=bench_ladder(subset, folds, quick=quick),
        n_startup_trials=startup,
    )
    data = rung_data(spec, load_training(spec.data_source(os.environ.get("TUNING_MNIST"))))
    top = data[-1]  # every searcher's score: all folds of the whole subset, full epochs
    assert top.rung == Rung(subset, folds), top.rung
    x, y = top.x, top.y
    train_images = len(fold_indices(y, folds=folds, seed=seed)[0][0])
    budget = budget_fold_epochs * train_images
    runs: dict[str, Ledger] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in SEARCHERS:
            ledger = Ledger(budget)
            if name == "ours":
                _run_ours(spec, data, ledger, Path(tmp))
            else:
                _run_kt(name, spec, x, y, ledger, Path(tmp), factor)
            runs[name] = ledger
            keras.backend.clear_session()
    out: dict[str, Any] = {
        "seed": seed,
        "budget": budget,
        "sampler": spec.search.sampler,
        "pruner": spec.pruner,
    }
    for name, ledger in runs.items():
        scored = [p for p in ledger.trace if p["score"] is not None]
        out[name] = {
            "best": round(ledger.best, 4) if scored else None,
            "image_epochs_to_best": ledger.spent_to_reach(ledger.best) if scored else None,
            "image_epochs_spent": ledger.spent,
            "seconds": ledger.trace[-1]["seconds"] if ledger.trace else None,
            "trials_scored": len(scored),
            "trials_unscored": len(ledger.trace) - len(scored),
            "trials_continued": ledger.continued,
            "trace": ledger.trace,
        }
    bests = [out[name]["best"] for name in SEARCHERS if out[name]["best"] is not None]
    hb_best = out["kt_hyperband"]["best"]
    common_target = min(bests) if len(bests) == len(SEARCHERS) else None
    for name, ledger in runs.items():
        out[name]["image_epochs_to_kt_hyperband_best"] = (
            ledger.spent_to_reach(hb_best) if hb_best is not None else None
        )
        out[name]["image_epochs_to_common_target"] = (
            ledger.spent_to_reach(common_target) if common_target is not None else None
        )
    out["common_target"] = common_target
    ours = out["ours"]["image_epochs_to_kt_hyperband_best"]
    hb = out["kt_hyperband"]["image_epochs_to_best"]
    out["ours_over_kt_hyperband_compute"] = round(ours / hb, 3) if ours and hb else None
    out["goal_met"] = bool(ours and hb and ours <= 0.5 * hb)
    return out


def _summary(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in SEARCHERS:
        row: dict[str, Any] = {}
        for key in ("best", "image_epochs_to_best", "image_epochs_to_common_target", "seconds"):
            values = [s[name][key] for s in seeds if s[name][key] is not None]
            row[key] = spread(values, 4) if values else None
        row["reached_kt_hyperband_best"] = sum(
            s[name]["image_epochs_to_kt_hyperband_best"] is not None for s in seeds
        )
        summary[name] = row
    ratios = [s["ours_over_kt_hyperband_compute"] for s in seeds]
    summary["ours_over_kt_hyperband_compute"] = ratios
    summary["goal_met_seeds"] = sum(s["goal_met"] for s in seeds)
    return summary


def _cell(stats: dict[str, float] | None, digits: int) -> str:
    if stats is None:
        return "-"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def _table(result: dict[str, Any]) -> str:
    sizes, summary, n = result["sizes"], result["summary"], len(result["seeds"])
    labels = {
        "ours": f"ours: {result['sampler']} + {result['pruner']} over {len(sizes['ladder'])} rungs",
        "kt_hyperband": "KerasTuner Hyperband",
        "kt_random": "KerasTuner RandomSearch",
    }
    ladder = "; ".join(
        f"rung {i}: {Rung(**rung).describe()}" for i, rung in enumerate(sizes["ladder"])
    )
    lines = [
        f"{'QUICK RUN (too small to judge the goal). ' if result['quick'] else ''}"
        f"{sizes['subset']} images, {sizes['folds']}-fold CV, max_epochs {sizes['max_epochs']}, "
        f"KerasTuner Hyperband factor {sizes['factor']}, TPE start-up trials {sizes['startup']}, "
        f"budget {sizes['budget_fold_epochs']} fold-epochs = {result['budget']:,} image-epochs "
        f"per searcher, seeds {result['seed_list']} (mean ± std over {n}); our rungs: {ladder}; "
        f"load average before/after {result['load_before']} / {result['load_after']}.",
        "",
        "| searcher | best CV accuracy | image-epochs to its best "
        "| image-epochs to common target | reached KT Hyperband's best (seeds) | wall seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in SEARCHERS:
        row = summary[name]
        lines.append(
            f"| {labels[name]} | {_cell(row['best'], 4)} | "
            f"{_cell(row['image_epochs_to_best'], 0)} | "
            f"{_cell(row['image_epochs_to_common_target'], 0)} | "
            f"{row['reached_kt_hyperband_best']}/{n} | {_cell(row['seconds'], 0)} |"
        )
    ratios = ", ".join(
        "never" if r is None else str(r) for r in summary["ours_over_kt_hyperband_compute"]
    )
    lines += [
        "",
        "Our image-epochs to reach KT Hyperband's best / Hyperband's image-epochs to its best, "
        f"per seed: {ratios}. Goal (<= 0.5) met in {summary['goal_met_seeds']} of {n} seeds.",
    ]
    return "\n".join(lines)


def run(*, quick: bool) -> dict[str, Any]:
    if quick:
        # Factor 2 makes Hyperband's first bracket promote a trial within this tiny budget (6
        # fold-epochs: 2 new trials and the promoted one's new epoch, on 2 folds). Each fold costs
        # about a second of building and tracing whatever its size: few images, one seed.
        sizes: dict[str, Any] = {
            "subset": 100,
            "folds": 2,
            "max_epochs": 2,
            "budget_fold_epochs": 6,
            "startup": 2,
            "factor": 2,
        }
        seeds = [1]
    else:
        sizes = {
            "subset": 1500,
            "folds": 2,
            "max_epochs": 3,
            "budget_fold_epochs": 72,
            "startup": 4,
            "factor": 3,
        }
        seeds = [1, 2, 3, 4]
    ladder = bench_ladder(sizes["subset"], sizes["folds"], quick=quick)
    load_before = load_average()
    start = time.perf_counter()
    per_seed = [_one_seed(seed, **sizes, quick=quick) for seed in seeds]
    result = {
        "quick": quick,
        "sizes": {**sizes, "ladder": [dataclasses.asdict(rung) for rung in ladder]},
        "budget": per_seed[0]["budget"],
        "sampler": per_seed[0]["sampler"],
        "pruner": per_seed[0]["pruner"],
        "seed_list": seeds,
        "load_before": load_before,
        "load_after": load_average(),
        "seconds": round(time.perf_counter() - start, 1),
        "summary": _summary(per_seed),
        "seeds": per_seed,
    }
    save("search", result, _table(result))
    return result
