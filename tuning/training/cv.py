"""Stratified k-fold scoring of a Keras model-building function, and the nested-CV loop that
scores a whole search. Knows nothing of Optuna.

The same splits are used for every trial (they depend only on the labels, k and the seed), and
each fold starts from the same random seed, so two configurations are compared on equal terms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from scipy.stats import binomtest
from sklearn.model_selection import StratifiedKFold

from tuning.memory import freeze_long_lived_objects, release_memory
from tuning.training.divergence import DivergenceGuard

BuildFn = Callable[[], keras.Model]
EpochFn = Callable[[int, int, float], None]
"""Called as `on_epoch(fold, epoch, val_accuracy)` after every epoch; may raise to stop."""
FoldFn = Callable[[int, float], None]
"""Called as `on_fold(fold, val_accuracy)` after every fold; may raise to stop."""


FitPredictFn = Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, dict[str, Any]]]
"""Called as `fit_predict(fold, train_idx, held_idx)` for each outer fold of a nested CV: tunes
and trains on `train_idx` only; returns the class probabilities of `held_idx` and the chosen
parameters."""
LogFn = Callable[[str], None]


FitFn = Callable[..., Any]
"""Called as `fit(model, x, y, validation_data=, callbacks=)`; trains by the trial's recipe
(`tuning.training.recipe.train`, through the HyperModel's `fit`) and returns a Keras History."""


@dataclass(frozen=True)
class CVResult:
    """Per-fold validation accuracies (final epoch) and what it cost."""

    fold_accuracies: list[float]
    train_seconds: float
    param_count: int
    histories: list[dict[str, list[float]]] = field(repr=False)

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_accuracies))


def fold_indices(y: np.ndarray, *, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (train, validation) index pairs; the same for the same labels, k and seed."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


class _EpochReporter(keras.callbacks.Callback):
    def __init__(self, fold: int, on_epoch: EpochFn | None) -> None:
        super().__init__()
        self.fold = fold
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.on_epoch is not None:
            self.on_epoch(self.fold, epoch, float((logs or {})["val_accuracy"]))


def _default_fit(model: keras.Model, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> Any:
    return model.fit(x, y, verbose=0, **kwargs)


def cross_validate(
    build: BuildFn,
    x: np.ndarray,
    y: np.ndarray,
    *,
    folds: int,
    seed: int,
    run_folds: int | None = None,
    fit: FitFn = _default_fit,
    on_epoch: EpochFn | None = None,
    on_fold: FoldFn | None = None,
) -> CVResult:
    """Train a fresh `build()` model on each fold and score it on the held-out part.

    Args:
        build: returns a new compiled model with an `accuracy` metric.
        x, y: all images and labels to split; the test set never belongs here.
        folds: k. seed: fixes the splits and each fold's initial weights.
        run_folds: stop after this many folds (default: all k); the splits are still k-fold.
        fit: trains `model` on (x, y); receives `validation_data` and `callbacks`.
        on_epoch, on_fold: progress hooks; raising from one (say, `optuna.TrialPruned`) stops
            the run.

    Raises:
        TrainingDivergedError: a fold's training loss became NaN or infinite.
    """
    freeze_long_lived_objects()
    accuracies: list[float] = []
    histories: list[dict[str, list[float]]] = []
    seconds = 0.0
    param_count = 0
    splits = fold_indices(y, folds=folds, seed=seed)[:run_folds]
    for fold, (train_idx, val_idx) in enumerate(splits):
        keras.utils.set_random_seed(seed + fold)
        try:
            history, param_count, fold_seconds = _train_fold(
                build, fit, fold, x[train_idx], y[train_idx], (x[val_idx], y[val_idx]), on_epoch
            )
        finally:
            release_memory()
        seconds += fold_seconds
        histories.append(history)
        accuracies.append(history["val_accuracy"][-1])
        if on_fold is not None:
            on_fold(fold, accuracies[-1])
    return CVResult(accuracies, seconds, param_count, histories)


def _train_fold(
    build: BuildFn,
    fit: FitFn,
    fold: int,
    x: np.ndarray,
    y: np.ndarray,
    validation_data: tuple[np.ndarray, np.ndarray],
    on_epoch: EpochFn | None,
) -> tuple[dict[str, list[float]], int, float]:
    model = build()
    start = time.perf_counter()
    history = fit(
        model,
        x,
        y,
        validation_data=validation_data,
        # The guard first: a diverged epoch is reported as such, not as a progress value.
        callbacks=[DivergenceGuard(f"fold {fold}, "), _EpochReporter(fold, on_epoch)],
    )
    seconds = time.perf_counter() - start
    logs = {key: [float(v) for v in values] for key, values in history.history.items()}
    return logs, model.count_params(), seconds


@dataclass(frozen=True, kw_only=True)
class Interval:
    """A confidence interval for an accuracy: `low` to `high` at `level`, by `method`."""

    method: str = "wilson"
    level: float = 0.95
    low: float
    high: float

    @classmethod
    def wilson(cls, correct: int, n: int, level: float = 0.95) -> Interval:
        """The Wilson score interval of `correct / n` (`wilson_interval`)."""
        low, high = wilson_interval(correct, n, level)
        return cls(level=level, low=low, high=high)


@dataclass(frozen=True)
class FoldResult:
    """One outer fold of a nested CV: how many images it held out, the accuracy on them, the
    parameters its own search chose, and the seconds it took."""

    held_out: int
    accuracy: float
    params: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class NestedResult:
    """Held-out class probabilities of every image (N, classes), each from a model whose tuning
    and training never saw it, and what each outer fold did."""

    probs: np.ndarray
    folds: list[FoldResult]

    def correct(self, y: np.ndarray) -> int:
        return int(np.sum(self.probs.argmax(axis=1) == y))


def nested_cv(
    y: np.ndarray,
    *,
    folds: int,
    seed: int,
    num_classes: int,
    fit_predict: FitPredictFn,
    log: LogFn | None = None,
) -> NestedResult:
    """The nested-CV loop: split `y` into `folds` stratified outer folds (seeded by `seed`); for
    each, `fit_predict` searches and trains on the other folds and predicts the held-out one.
    `log` gets one line per outer fold."""
    probs = np.zeros((len(y), num_classes))
    results = []
    for fold, (train_idx, held_idx) in enumerate(fold_indices(y, folds=folds, seed=seed)):
        start = time.perf_counter()
        probs[held_idx], params = fit_predict(fold, train_idx, held_idx)
        accuracy = float(np.mean(probs[held_idx].argmax(axis=1) == y[held_idx]))
        seconds = round(time.perf_counter() - start, 1)
        results.append(FoldResult(len(held_idx), accuracy, dict(params), seconds))
        if log is not None:
            log(
                f"  outer fold {fold + 1}/{folds}: accuracy {accuracy:.3f} on "
                f"{len(held_idx)} held-out images ({seconds:.0f} s)"
            )
    return NestedResult(probs, results)


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion `correct / n` (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or n successes,
    which matters with a few dozen images and an accuracy near 100%.
    """
    if n <= 0:
        raise ValueError(f"n must be > 0. Received: n={n}")
    interval = binomtest(int(correct), n).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)
