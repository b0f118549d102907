"""An honest accuracy for a whole study on data without a test split: nested cross-validation.

The images are split into stratified outer folds. For each, the study file's whole search (its
rungs, sampler, pruner and trial budget, in a throw-away in-memory study) runs on the other
folds only; its winner at the highest rung is trained by its own recipe on them, as export would,
and predicts the held-out fold. Every image is predicted once by a model whose tuning and
training never saw it, as `tuning transfer` scores a transfer, so the two can be compared.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna

from tuning.errors import TrainingDivergedError, TuningError
from tuning.hp import OptunaHyperParameters
from tuning.images.dataset import Images, load_training
from tuning.memory import release_memory
from tuning.records import library_versions
from tuning.study.baseline import enqueue_first_trials, starting_points
from tuning.study.config import StudySpec
from tuning.study.hypermodels import make_hypermodel
from tuning.study.objective import make_objective, rung_data
from tuning.study.rungs import best_at_highest_rung
from tuning.study.sampling import make_pruner, make_sampler, study_directions
from tuning.study.space import describe_space
from tuning.training.cv import FoldResult, nested_cv, wilson_interval

LogFn = Callable[[str], None]


@dataclass(frozen=True)
class NestedScore:
    """Pooled held-out accuracy of the study's whole search, and what each outer fold chose."""

    study: str
    class_names: list[str]
    correct: int
    images: int
    interval: tuple[float, float]
    outer_folds: int
    trials: int
    seconds: float
    folds: list[FoldResult] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.images


def nested_score(
    spec: StudySpec,
    *,
    data: str | Path | None = None,
    class_names: list[str] | None = None,
    outer_folds: int = 3,
    trials: int | None = None,
    log: LogFn | None = None,
) -> NestedScore:
    """Nested-CV accuracy of `spec`'s search on its training data (`class_names`: a subset of
    the classes, default the study file's), with `trials` per outer fold (default: its budget).

    Raises:
        TuningError: fewer than 2 outer folds, or a class too small to fill them.
        DataError, ConfigError: as for `tuning study`.
    """
    if not 2 <= outer_folds <= 20:
        raise TuningError(
            f"must be in 2..20. Received: outer_folds={outer_folds}", param="outer_folds"
        )
    images = load_training(spec.data_source(data), class_names=class_names or spec.data.class_names)
    n_trials = trials or spec.budget.trials
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tuning-nested-") as artifacts:

        def fit_predict(
            fold: int, train_idx: np.ndarray, held_idx: np.ndarray
        ) -> tuple[np.ndarray, dict[str, Any]]:
            return _search_and_predict(
                spec, images, train_idx, held_idx, trials=n_trials, artifacts=Path(artifacts)
            )

        result = nested_cv(
            images.y,
            folds=outer_folds,
            seed=spec.seed + 1,
            num_classes=images.num_classes,
            fit_predict=fit_predict,
            log=log,
        )
    correct = result.correct(images.y)
    return NestedScore(
        study=spec.name,
        class_names=images.class_names,
        correct=correct,
        images=len(images.y),
        interval=wilson_interval(correct, len(images.y)),
        outer_folds=outer_folds,
        trials=n_trials,
        seconds=round(time.perf_counter() - start, 1),
        folds=result.folds,
    )


def _search_and_predict(
    spec: StudySpec,
    images: Images,
    train_idx: np.ndarray,
    held_idx: np.ndarray,
    *,
    trials: int,
    artifacts: Path,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The study's search on one outer training part; its winner's probabilities for the held
    part, and the winner's parameters."""
    x, y = images.x[train_idx], images.y[train_idx]
    fold_spec = spec.for_images(len(y))
    hypermodel = make_hypermodel(
        fold_spec, input_shape=images.input_shape, num_classes=images.num_classes
    )
    rungs = rung_data(fold_spec, dataclasses.replace(images, x=x, y=y))
    # In memory: the search of one outer fold is a means, not a result to keep.
    study = optuna.create_study(
        directions=study_directions(spec), pruner=make_pruner(spec), sampler=make_sampler(spec)
    )
    defaults = hypermodel.defaults()
    # The same first trials as the study itself: baseline, then the file's starting points.
    points = starting_points(spec, describe_space(hypermodel), defaults)
    enqueue_first_trials(study, spec, hypermodel, defaults, points)
    objective = make_objective(
        hypermodel, rungs, spec=fold_spec, versions=library_versions(), artifacts=artifacts
    )
    study.optimize(objective, n_trials=trials, catch=(TrainingDivergedError,), gc_after_trial=True)
    best = best_at_highest_rung(study.trials)
    if best is None:
        raise TuningError(f"study '{spec.name}': no trial finished a rung in an outer fold")
    hp = OptunaHyperParameters(optuna.trial.FixedTrial(best.params))  # type: ignore[arg-type]
    try:
        keras.utils.set_random_seed(spec.seed)
        model = hypermodel.build(hp)
        hypermodel.fit(hp, model, x, y, epoch_scale=spec.export.epoch_scale, seed=spec.seed)
        probs = model.predict(images.x[held_idx], batch_size=512, verbose=0)
    finally:
        release_memory()
    return np.asarray(probs, dtype=np.float64), dict(best.params)
