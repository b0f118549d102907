"""Accuracy against cost, from a study's trials: each trial scored at the highest rung any trial
reached, with its network's cost, and the Pareto front among them (no other trial is both as
accurate and as cheap, and better in one). What `tuning front` prints and draws, for a study of
two directions or of one direction with limits alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from tuning.errors import ConfigError, StudyMismatchError
from tuning.figures import front_figure
from tuning.protocol import format_limit
from tuning.records import COST_NAMES, TrialKey
from tuning.storage import (
    missing_sqlite_file,
    open_storage,
    redact,
    resolve_storage_url,
    study_names,
)
from tuning.study.config import StudySpec
from tuning.study.rungs import highest_rung, pareto_front, ranked_at_highest_rung, rung_scores
from tuning.study.trial_cost import trial_costs

COST_LABELS = {
    "params": "parameters",
    "flops": "forward FLOPs per image",
    "latency_ms": "CPU latency per image at batch 1 (ms)",
}


@dataclass(frozen=True)
class FrontPoint:
    """A trial at the top rung: its CV accuracy there, its cost, and whether it is on the front
    or is the baseline (the seed network)."""

    trial: int
    accuracy: float
    cost: float
    on_front: bool
    baseline: bool


def front_points(trials: Sequence[FrozenTrial], *, cost: str) -> list[FrontPoint]:
    """The feasible trials at the highest rung reached that have a `cost`, cheapest first, with
    the baseline among them even when it is over a limit (it is the yardstick, never a pick)."""
    ranked = list(ranked_at_highest_rung(trials))
    top = max((highest_rung(t) for t in ranked), default=-1)
    baselines = [
        t
        for t in trials
        if t.user_attrs.get(TrialKey.BASELINE) and top in rung_scores(t) and t not in ranked
    ]
    scored = [
        (t, rung_scores(t)[top], trial_costs(t)[cost])
        for t in [*ranked, *baselines[:1]]
        if cost in trial_costs(t)
    ]
    front = {t.number for t in pareto_front(trials, cost)}
    points = [
        FrontPoint(
            trial=t.number,
            accuracy=acc,
            cost=value,
            on_front=t.number in front,
            baseline=bool(t.user_attrs.get(TrialKey.BASELINE)),
        )
        for t, acc, value in scored
    ]
    return sorted(points, key=lambda p: (p.cost, -p.accuracy))


def draw_front(points: Sequence[FrontPoint], path: Path, *, cost: str, title: str) -> Path:
    """The front as a PNG at `path`, the baseline marked as a star."""
    baseline = next((p for p in points if p.baseline), None)
    return front_figure(
        [(p.cost, p.accuracy, f"#{p.trial}") for p in points],
        [(p.cost, p.accuracy, f"#{p.trial}") for p in points if p.on_front],
        path,
        cost_label=COST_LABELS.get(cost, cost),
        marked=None
        if baseline is None
        else (baseline.cost, baseline.accuracy, f"seed network (#{baseline.trial})"),
        title=title,
    )


def describe_front(points: Sequence[FrontPoint], *, cost: str) -> list[str]:
    """The front as lines of text, cheapest first, with the baseline's line for scale."""
    lines = [f"{'trial':>6}  {'CV accuracy':>11}  {cost:>12}"]
    for p in points:
        if p.on_front or p.baseline:
            mark = "  seed network" if p.baseline else ""
            lines.append(
                f"{'#' + str(p.trial):>6}  {p.accuracy:>11.4f}  {format_limit(p.cost):>12}{mark}"
            )
    return lines


def default_cost(spec: StudySpec) -> str:
    """The cost a study is about: its second direction, else its first limit, else FLOPs."""
    objective = spec.objective
    return (objective.directions[1:] or tuple(objective.limits) or ("flops",))[0]


def load_front(
    spec: StudySpec, *, storage: str | None = None, cost: str | None = None
) -> tuple[list[FrontPoint], str]:
    """The stored study of `spec` as front points against `cost` (default: `default_cost`), and
    the cost used.

    Raises:
        ConfigError: `cost` is not a cost name.
        StudyMismatchError: the study is not in `storage`.
    """
    cost = cost or default_cost(spec)
    if cost not in COST_NAMES:
        raise ConfigError(f"cost must be one of {', '.join(COST_NAMES)}. Received: cost={cost!r}")
    url = resolve_storage_url(storage)
    database = missing_sqlite_file(url)
    if database is not None:
        raise StudyMismatchError(
            f"no study database at {database}; run `tuning study {spec.path}` first or give "
            "the storage that holds the study"
        )
    rdb = open_storage(url)
    if spec.name not in study_names(rdb):
        raise StudyMismatchError(
            f"study '{spec.name}' (from {spec.path}) not found in {redact(url)}; run `tuning "
            f"study {spec.path}` first"
        )
    study = optuna.load_study(study_name=spec.name, storage=rdb)
    return front_points(study.get_trials(deepcopy=False), cost=cost), cost
