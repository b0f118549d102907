"""The fidelity ladder as Optuna sees it: the step each rung reports at, each trial's rung scores,
the best trial (and the Pareto front) at the highest rung reached, the dominance stop, and how
well each rung predicts the next.

A trial reports its score for rung r (the mean over the folds that rung runs) at step 3**r: steps
1, 3, 9, ... These are exactly the rungs of Optuna's SuccessiveHalving and Hyperband pruners with
`min_resource=1, reduction_factor=3`, so the pruner decides who climbs, and no two rungs ever
share a step.

A study of two directions (accuracy and a cost) cannot report: Optuna's `Trial.report` and
`should_prune` raise in multi-objective studies, and its pruners rank one value. There a trial's
rung scores are its `rungs` user attribute, and the dominance stop decides who climbs: after a
rung below the top, a trial stops when at least `DOMINATORS` feasible trials that finished the
same rung dominate it there (accuracy at least as high and cost at most as high, one of them
strictly). It is successive halving's idea in two objectives: a trial goes on while few trials
scored on the same rung beat it on both counts. Two, not one, so that a single lucky score on a
cheap rung stops nobody.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from tuning.records import TrialKey
from tuning.study.trial_cost import is_feasible, trial_costs
from tuning.typed_json import from_json, to_json

REDUCTION_FACTOR = 3
SCORED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
DOMINATORS = 2  # the dominance stop: how many trials must dominate one at a rung to stop it


@dataclass(frozen=True)
class RungRecord:
    """What a trial did on one rung: its fold accuracies, their mean (the rung's score) and
    spread, the epochs its recipe ran there and the seconds spent training."""

    rung: int
    mean: float
    std: float
    folds: list[float]
    epochs: int
    train_seconds: float

    def as_attr(self) -> dict[str, Any]:
        return dict(to_json(self))

    @classmethod
    def from_attr(cls, value: dict[str, Any]) -> RungRecord:
        return from_json(cls, value)


def rung_records(trial: FrozenTrial) -> list[RungRecord]:
    """The trial's finished rungs, lowest first."""
    return [RungRecord.from_attr(v) for v in trial.user_attrs.get(TrialKey.RUNGS, [])]


def rung_step(rung: int) -> int:
    """The step at which a trial reports rung `rung` (from 0)."""
    return REDUCTION_FACTOR**rung


def step_rung(step: int) -> int | None:
    """The rung reported at `step`, or None if no rung reports there."""
    rung = round(math.log(step, REDUCTION_FACTOR)) if step >= 1 else -1
    return rung if rung >= 0 and rung_step(rung) == step else None


def make_pruner(name: str, *, rungs: int) -> optuna.pruners.BasePruner:
    """The pruner that decides who climbs `rungs` rungs ("successive_halving", "hyperband",
    "median" or "none"); "dominance", the dominance stop, is the objective's, not Optuna's."""
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=REDUCTION_FACTOR, min_early_stopping_rate=0
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1,
            max_resource=max(REDUCTION_FACTOR, rung_step(rungs - 1)),
            reduction_factor=REDUCTION_FACTOR,
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name in ("none", "dominance"):
        return optuna.pruners.NopPruner()
    raise ValueError(
        f"pruner must be successive_halving, hyperband, median or none. Received: {name!r}"
    )


def rung_scores(trial: FrozenTrial) -> dict[int, float]:
    """The trial's score at each rung it finished: its intermediate values, or in a study of
    two directions (which cannot report them) its `rungs` user attribute."""
    if not trial.intermediate_values:
        return {r.rung: r.mean for r in rung_records(trial) if math.isfinite(r.mean)}
    scores: dict[int, float] = {}
    for step, value in trial.intermediate_values.items():
        rung = step_rung(step)
        if rung is not None and value is not None and math.isfinite(value):
            scores[rung] = float(value)
    return scores


def highest_rung(trial: FrozenTrial) -> int:
    """The highest rung the trial finished, or -1 for none."""
    return max(rung_scores(trial), default=-1)


def ranked_at_highest_rung(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Feasible completed and pruned trials that reached the highest rung any of them reached,
    best first (ties: the earlier trial), one per distinct set of parameters (its best-scoring
    trial). A trial over an `[objective]` limit (the baseline may be one) is never ranked."""
    scored = [t for t in trials if t.state in SCORED_STATES and rung_scores(t) and is_feasible(t)]
    if not scored:
        return []
    top = max(highest_rung(t) for t in scored)
    at_top = sorted(
        (t for t in scored if top in rung_scores(t)),
        key=lambda t: (-rung_scores(t)[top], t.number),
    )
    distinct: dict[str, FrozenTrial] = {}
    for trial in at_top:
        distinct.setdefault(repr(sorted(trial.params.items())), trial)
    return list(distinct.values())


def best_at_highest_rung(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """Among feasible completed and pruned trials, the best-scoring one at the highest rung any
    reached; a trial that stopped lower never wins over one scored closer to what export
    trains."""
    ranked = ranked_at_highest_rung(trials)
    return ranked[0] if ranked else None


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether (accuracy, cost) `a` dominates `b`: no worse in both, better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and a != b


def pareto_front(trials: Sequence[FrozenTrial], cost: str) -> list[FrozenTrial]:
    """The trials of `ranked_at_highest_rung` that no other of them dominates in CV accuracy at
    that rung and `cost` (those without a stored `cost` are left out), cheapest first."""
    ranked = [t for t in ranked_at_highest_rung(trials) if cost in trial_costs(t)]
    if not ranked:
        return []
    top = highest_rung(ranked[0])
    points = {t.number: (rung_scores(t)[top], trial_costs(t)[cost]) for t in ranked}
    front = [t for t in ranked if not any(_dominates(p, points[t.number]) for p in points.values())]
    return sorted(front, key=lambda t: (points[t.number][1], -points[t.number][0], t.number))


def dominated_by(
    trials: Sequence[FrozenTrial], *, number: int, rung: int, cost: str
) -> list[FrozenTrial]:
    """The feasible trials (of any state but failed) that finished `rung` and dominate trial
    `number` there in CV accuracy and `cost`; the dominance stop stops it when they are at
    least `DOMINATORS`."""
    me = next(t for t in trials if t.number == number)
    if rung not in rung_scores(me) or cost not in trial_costs(me):
        return []
    mine = (rung_scores(me)[rung], trial_costs(me)[cost])
    return [
        t
        for t in trials
        if t.number != number
        and t.state != TrialState.FAIL
        and is_feasible(t)
        and rung in rung_scores(t)
        and cost in trial_costs(t)
        and _dominates((rung_scores(t)[rung], trial_costs(t)[cost]), mine)
    ]


@dataclass(frozen=True)
class RungCorrelation:
    """Spearman's rank correlation between the scores of the trials that finished both rungs."""

    lower: int
    upper: int
    trials: int
    rho: float | None  # None with fewer than 3 trials, or when a rung's scores are all equal
    p_value: float | None

    def describe(self) -> str:
        head = f"rung {self.lower} -> {self.upper}"
        if self.rho is None:
            return f"{head}: too few distinct trials to rank ({self.trials})"
        return (
            f"{head}: Spearman {self.rho:+.2f} over {self.trials} trials (p = {self.p_value:.2g})"
        )


def rung_correlations(trials: Sequence[FrozenTrial], *, rungs: int) -> list[RungCorrelation]:
    """How well each rung's ranking predicts the next one's, from the study's own trials.

    Only trials that were promoted reach the upper rung, so each figure describes the best part
    of the lower rung's ranking; that is the part the pruner relies on.
    """
    scored = [rung_scores(t) for t in trials if t.state in SCORED_STATES]
    out = []
    for lower in range(rungs - 1):
        pairs = [(s[lower], s[lower + 1]) for s in scored if lower in s and lower + 1 in s]
        rho = p_value = None
        if len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1:
            lower_scores, upper_scores = [a for a, _ in pairs], [b for _, b in pairs]
            rho = float(stats.spearmanr(lower_scores, upper_scores).statistic)
            p_value = _spearman_p_value(lower_scores, upper_scores)
        out.append(RungCorrelation(lower, lower + 1, len(pairs), rho, p_value))
    return out


EXACT_UP_TO = 8  # trials: up to 8! = 40,320 orderings, enumerated in well under a second


def _spearman_p_value(x: list[float], y: list[float]) -> float:
    """Two-sided p-value of Spearman's rho. With a handful of trials (what a short study has)
    it is exact, over every ordering of the upper rung's ranks: the t approximation that
    `spearmanr` uses gives, for a perfect ranking of 5 trials, 1e-24 instead of the true 1/60."""
    if len(x) > EXACT_UP_TO:
        return float(stats.spearmanr(x, y).pvalue)
    # Spearman's rho is Pearson's r of the ranks (ties get their mean rank, as in spearmanr).
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    orderings = ry[np.array(list(itertools.permutations(range(len(ry)))))]
    rho = orderings @ rx / (np.linalg.norm(rx) * np.linalg.norm(ry))  # every ordering at once
    observed = rx @ ry / (np.linalg.norm(rx) * np.linalg.norm(ry))
    return float(np.mean(np.abs(rho) >= abs(observed) - 1e-12))
