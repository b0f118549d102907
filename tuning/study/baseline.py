"""A study's first trials: the baseline (the HyperModel's defaults; for the built-in space, the
student project's seed network), then the study file's `[[study.enqueue]]` starting points. Both
climb every rung, so the yardstick is scored where it counts. Used by `tuning study` and by each
outer fold of `tuning nested`."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from tuning.errors import ConfigError
from tuning.records import TrialKey
from tuning.study.config import StudySpec
from tuning.study.recipe_hypermodel import RecipeHyperModel
from tuning.study.space import check_params


def starting_points(
    spec: StudySpec, space: list[dict[str, Any]], defaults: dict[str, Any]
) -> list[dict[str, Any]]:
    """The [[study.enqueue]] tables as trials' parameters: the baseline's, overridden.

    Raises:
        ConfigError: a table names a hyperparameter the space lacks or a value it cannot take.
    """
    points = []
    for index, params in enumerate(spec.enqueue):
        try:
            check_params(space, params)
        except ValueError as exc:
            raise ConfigError(f"{spec.path}: [[study.enqueue]] number {index + 1}: {exc}") from None
        points.append({**defaults, **params})
    return points


def enqueue_first_trials(
    study: optuna.Study,
    spec: StudySpec,
    hypermodel: RecipeHyperModel,
    defaults: dict[str, Any],
    points: list[dict[str, Any]],
) -> None:
    """A new study's first trials: the baseline, `defaults` (if the file asks for it), then the
    starting `points` (`starting_points`), each of which climbs every rung."""
    if spec.enqueue_seed:
        ensure_baseline(study, defaults, label=hypermodel.baseline_label)
    for params in points:
        study.enqueue_trial(params, user_attrs={TrialKey.ENQUEUED_FROM: str(spec.path)})


def ensure_baseline(
    study: optuna.Study, params: dict[str, Any], *, label: str = "seed network"
) -> bool:
    """Enqueue the baseline, `params` (the seed network, or a HyperModel's defaults), unless
    a baseline trial has completed, is waiting, or is running with a live heartbeat; returns
    whether it enqueued one.

    A worker killed mid-trial leaves its trial RUNNING: stale ones are failed first, so a killed
    baseline is run again by whoever opens the study next.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # does nothing without a heartbeat
    states = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
    for trial in study.get_trials(deepcopy=False, states=states):
        if trial.user_attrs.get(TrialKey.BASELINE):
            return False
    study.enqueue_trial(params, user_attrs={TrialKey.BASELINE: label})
    return True
