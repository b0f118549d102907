"""How a study chooses its trials: the Optuna sampler and the pruner over its rungs, made from
the study file's `[search]` table, and the directions of its `[objective]`."""

from __future__ import annotations

import optuna
from optuna.study import StudyDirection

from tuning.study import rungs
from tuning.study.config import StudySpec


def make_sampler(spec: StudySpec, *, offset: int = 0, salt: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with `seed + offset + salt`.

    `offset` (trials already stored) keeps a resumed run from replaying the first run's random
    start-up draws; `salt` differs between parallel workers so they do not draw the same points.
    """
    seed = spec.seed + offset + salt
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        n_startup_trials=spec.search.n_startup_trials,
        multivariate=True,
        group=True,  # conditional parameters (deeper blocks) get their own joint model
        constant_liar=True,  # parallel workers do not all sample the same point
        seed=seed,
    )


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner over its rungs (`tuning.study.rungs`): for the dominance stop, which
    the objective applies itself, none of Optuna's."""
    return rungs.make_pruner(spec.pruner, rungs=len(spec.fidelity.ladder))


def study_directions(spec: StudySpec) -> list[StudyDirection]:
    """Optuna's directions for `spec`'s objective: accuracy maximised, a cost minimised."""
    costs = len(spec.objective.directions) - 1
    return [StudyDirection.MAXIMIZE] + [StudyDirection.MINIMIZE] * costs
