"""The transfer search: what `tuning transfer` tries and how it scores a configuration.

A TPE study over `tuning.transfer.space.TransferHyperModel` (learning rate, epochs,
augmentation, unfreeze depth) whose trials are scored by stratified k-fold CV log loss, and the
nested CV that reruns that whole search inside each outer fold so the reported accuracy is from
images nobody tuned on.
`tuning.transfer.run` stores, trains and publishes around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from tuning.errors import DataError, TrainingDivergedError, TuningError
from tuning.hp import OptunaHyperParameters
from tuning.images.folder import ImageFolder
from tuning.memory import release_memory
from tuning.records import TrialKey
from tuning.training import cv
from tuning.training.cv import NestedResult
from tuning.transfer import model as transfer
from tuning.transfer.space import SPACE, TransferHyperModel

DEFAULT_TRIALS = 12
DEFAULT_OUTER_FOLDS = 3
INNER_FOLDS = 3
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class Search:
    """How configurations are searched and scored: trials per search, the folds of the nested CV,
    and the search space (KerasTuner configs, `tuning.transfer.space.SPACE` by default)."""

    trials: int = DEFAULT_TRIALS
    outer_folds: int = DEFAULT_OUTER_FOLDS
    inner_folds: int = INNER_FOLDS
    space: list[dict[str, Any]] = field(default_factory=lambda: SPACE)


def _sampler(seed: int, trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(
        n_startup_trials=max(1, min(5, trials // 2)), multivariate=True, seed=seed
    )


def _objective(
    hypermodel: TransferHyperModel, x: np.ndarray, y: np.ndarray, *, folds: int, seed: int
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        params = hypermodel.recipe(OptunaHyperParameters(trial))
        start = time.perf_counter()
        try:
            probs = transfer.held_out_probabilities(
                hypermodel.base,
                x,
                y,
                params,
                num_classes=hypermodel.num_classes,
                folds=folds,
                seed=seed,
            )
        except TrainingDivergedError as exc:
            trial.set_user_attr(TrialKey.FAIL_REASON, str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr(TrialKey.CV_ACCURACY, float(np.mean(probs.argmax(axis=1) == y)))
        trial.set_user_attr(TrialKey.TRAIN_SECONDS, round(time.perf_counter() - start, 2))
        return transfer.log_loss(y, probs)

    return objective


def tune(
    study: optuna.Study,
    base: transfer.BaseModel,
    x: np.ndarray,
    y: np.ndarray,
    *,
    search: Search,
    num_classes: int,
    seed: int,
) -> optuna.trial.FrozenTrial:
    """Run trials until `study` has `search.trials` finished ones; its best trial."""
    trials = search.trials
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    hypermodel = TransferHyperModel(base, num_classes, search.space)
    if not study.trials:
        study.enqueue_trial(
            hypermodel.defaults(), user_attrs={TrialKey.BASELINE: "default transfer"}
        )
    study.sampler = _sampler(seed + len(study.trials), trials)
    if trials > done:
        study.optimize(
            _objective(hypermodel, x, y, folds=search.inner_folds, seed=seed),
            n_trials=trials - done,
            gc_after_trial=True,
        )
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise TuningError(f"transfer study '{study.study_name}': no trial completed")
    return study.best_trial


def nested_cv(
    base: transfer.BaseModel,
    data: ImageFolder,
    *,
    search: Search,
    seed: int,
    log: LogFn,
) -> NestedResult:
    """Held-out probabilities of every image, each from a model tuned and trained without it
    (`tuning.training.cv.nested_cv` with this search), and what each outer fold chose."""
    num_classes = len(data.class_names)

    def fit_predict(
        fold: int, train_idx: np.ndarray, held_idx: np.ndarray
    ) -> tuple[np.ndarray, dict[str, Any]]:
        fold_seed = seed + 1000 * (fold + 1)
        x, y = data.x[train_idx], data.y[train_idx]
        inner = optuna.create_study(direction="minimize")
        best = tune(inner, base, x, y, search=search, num_classes=num_classes, seed=fold_seed)
        try:
            model = transfer.train(base, x, y, best.params, num_classes=num_classes, seed=fold_seed)
            return transfer.predict_proba(model, data.x[held_idx]), best.params
        finally:
            release_memory()

    return cv.nested_cv(
        data.y,
        folds=search.outer_folds,
        seed=seed + 1,
        num_classes=num_classes,
        fit_predict=fit_predict,
        log=log,
    )


def check_search(search: Search) -> None:
    """Raises TuningError for a trial or fold count out of range."""
    if not 1 <= search.trials <= 500:
        raise TuningError(f"must be in 1..500. Received: trials={search.trials}", param="trials")
    if not 2 <= search.outer_folds <= 20:
        raise TuningError(
            f"must be in 2..20. Received: outer_folds={search.outer_folds}", param="outer_folds"
        )
    if not 2 <= search.inner_folds <= 20:
        raise TuningError(
            f"must be in 2..20. Received: inner_folds={search.inner_folds}", param="inner_folds"
        )


def check_sizes(data: ImageFolder, search: Search) -> None:
    """Each class must fill every outer fold, and every inner fold of each outer training part."""
    outer, inner = search.outer_folds, search.inner_folds

    def enough(n: int) -> bool:
        # The smallest outer training part of a class of n images holds n - ceil(n / outer).
        return n >= outer and n - -(-n // outer) >= inner

    need = next(n for n in range(2, 10_000) if enough(n))
    for name, count in data.counts().items():
        if not enough(count):
            raise DataError(
                f"{data.root / name}: {count} usable image(s) in class '{name}'; nested CV with "
                f"{outer} outer and {inner} inner folds needs at least {need} per class"
            )


def protocol_summary(search: Search, seed: int) -> str:
    """The scoring protocol in a paragraph, for the card, the note and the README."""
    trials, outer_folds, inner_folds = search.trials, search.outer_folds, search.inner_folds
    return (
        f"Nested cross-validation (seed {seed}). The images are split into {outer_folds} "
        f"stratified outer folds. For each, a fresh TPE search of {trials} trials (each scored by "
        f"{inner_folds}-fold stratified CV log loss) runs on the other folds only; its winner is "
        "trained on them and predicts the held-out fold. Every image is so predicted once by a "
        "model whose tuning and training never saw it. Accuracy: the pooled held-out "
        "predictions; 95% interval: Wilson score interval with n = the number of images. "
        f"Remaining bias: slightly pessimistic, as each outer model learns from "
        f"{outer_folds - 1}/{outer_folds} of the images the final model uses; the interval "
        "covers image sampling only, not new writers, pens or paper."
    )
