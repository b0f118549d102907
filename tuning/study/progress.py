"""What a user watches: a progress bar during a study and a one-screen summary after it (with
two directions, the Pareto front of accuracy and cost)."""

from __future__ import annotations

import time
from typing import Any, TextIO

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from tuning.errors import StudyMismatchError
from tuning.protocol import DEFAULT_OBJECTIVE, Protocol
from tuning.records import StudyKey, TrialKey, format_flops, format_ms
from tuning.study.rungs import (
    best_at_highest_rung,
    highest_rung,
    pareto_front,
    rung_correlations,
    rung_scores,
)
from tuning.study.trial_cost import trial_costs


class StudyProgress:
    """A tqdm bar over this run's trials: done, best so far, current fold, time left.

    Use as an Optuna callback (per finished trial) and as the objective's `on_progress` hook.
    """

    def __init__(
        self,
        *,
        n_trials: int,
        timeout: float | None,
        disable: bool = False,
        done: int = 0,
        start: float | None = None,
        file: TextIO | None = None,
    ) -> None:
        """`done` trials and a `start` (time.monotonic()) carry over when a run is continued;
        the bar is drawn on `file` (default: standard error)."""
        self.timeout = timeout
        self.start = time.monotonic() if start is None else start
        self.finished = 0  # trials finished by this process
        self.bar = tqdm(
            total=n_trials,
            initial=done,
            unit="trial",
            dynamic_ncols=True,
            disable=disable,
            file=file,
        )
        self.best = ""
        self.current = ""

    def _refresh(self) -> None:
        parts = [p for p in (self.best, self.current) if p]
        if self.timeout is not None:
            left = max(0.0, self.timeout - (time.monotonic() - self.start))
            parts.append(f"timeout in {int(left // 60)}m{int(left % 60):02d}s")
        self.bar.set_postfix_str(" | ".join(parts), refresh=True)

    def status(self, message: str) -> None:
        self.current = message
        self._refresh()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        names = study.metric_names or []
        if len(names) > 1:  # two directions: how many points the front has
            self.best = f"front {len(pareto_front(trials, names[1]))} points"
        else:  # what export would take: the best feasible trial at the top rung
            best = best_at_highest_rung(trials)
            score = best and rung_scores(best)[highest_rung(best)]
            self.best = f"best {score:.4f} (#{best.number})" if best else "best -"
        state = "infeasible" if TrialKey.INFEASIBLE in trial.user_attrs else trial.state.name
        self.current = f"#{trial.number} {state.lower()}"
        self.finished += 1
        self.bar.update(1)
        self._refresh()

    def close(self) -> None:
        self.bar.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def cv_line(trial: FrozenTrial) -> str:
    """'0.9912 ± 0.0011 over 3 folds (0.9901, 0.9925, 0.9910)' for a trial's last rung."""
    folds = trial.user_attrs.get(TrialKey.FOLD_ACCURACIES, [])
    std = trial.user_attrs.get(TrialKey.CV_STD, float(np.std(folds)) if folds else 0.0)
    listed = ", ".join(f"{a:.4f}" for a in folds)
    scores = rung_scores(trial)
    value = scores[highest_rung(trial)] if scores else trial.values[0]
    return f"{value:.4f} ± {std:.4f} over {len(folds)} folds ({listed})"


def cost_line(trial: FrozenTrial) -> str:
    """'370,454 params, 22.8 MFLOP, 1.2 ms/img at batch 1': the costs stored on a trial."""
    costs = trial_costs(trial)
    parts = []
    if "params" in costs:
        parts.append(f"{int(costs['params']):,} params")
    if "flops" in costs:
        parts.append(format_flops(costs["flops"]))
    if "latency_ms" in costs:
        parts.append(f"{format_ms(costs['latency_ms'])} ms/img at batch 1")
    return ", ".join(parts)


def summary(
    study: optuna.Study, *, storage: str, study_file: str, device: str | None = None
) -> str:
    """A one-screen text summary of a study: counts, best trial, its parameters, the baseline,
    and the `device` this run trained on."""
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    infeasible = sum(TrialKey.INFEASIBLE in t.user_attrs for t in trials)
    lines = [
        f"Study {study.study_name}  ({storage})",
        *([f"Device: {device}"] if device else []),
        f"Trials: {len(trials)} — {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed"
        + (f"; {infeasible} over a limit" if infeasible else ""),
        *_objective_lines(study),
    ]
    best = best_at_highest_rung(trials)
    if best is None:
        lines.append("No trial has finished a rung yet: run the same command again to continue.")
        return "\n".join(lines)
    rungs = len((study.user_attrs.get(StudyKey.PROTOCOL) or {}).get("rungs") or [])
    lines += _rung_lines(trials, rungs)
    lines.append(
        f"Best: trial #{best.number} at rung {highest_rung(best)}, CV accuracy {cv_line(best)}"
    )
    lines += _baseline_lines(trials)
    lines += _best_lines(best)
    names = study.metric_names or []
    if len(names) > 1:
        lines += front_lines(trials, names[1])
    lines.append(f"Next: tuning export {study_file}   |   tuning dashboard")
    return "\n".join(lines)


def _rung_lines(trials: list[FrozenTrial], rungs: int) -> list[str]:
    """How many trials reached each rung, and how well each rung predicted the next."""
    if rungs <= 1:
        return []
    reached = [sum(highest_rung(t) >= r for t in trials) for r in range(rungs)]
    return [
        "Trials per rung: " + ", ".join(f"{r}: {n}" for r, n in enumerate(reached)),
        *(f"  {c.describe()}" for c in rung_correlations(trials, rungs=rungs)),
    ]


def _objective_lines(study: optuna.Study) -> list[str]:
    """The objective, if it is not accuracy alone (a study of another tool's: nothing)."""
    stored = study.user_attrs.get(StudyKey.PROTOCOL)
    try:
        aim = Protocol.read(stored, study=study.study_name, remedy="").aim
    except StudyMismatchError:
        return []
    if aim == DEFAULT_OBJECTIVE:
        return []
    feasible = " (best: the best trial within the limits)" if aim.limits else ""
    return [f"Objective: {aim.describe()}{feasible}"]


def front_lines(trials: list[FrozenTrial], cost: str) -> list[str]:
    """The Pareto front of CV accuracy and `cost` at the top rung, cheapest first."""
    front = pareto_front(trials, cost)
    if not front:
        return []
    top = highest_rung(front[0])
    return [
        f"Pareto front at rung {top} ({len(front)} points; cheapest first):",
        *(f"  #{t.number:<4} CV accuracy {rung_scores(t)[top]:.4f}  {cost_line(t)}" for t in front),
    ]


def _baseline_lines(trials: list[FrozenTrial]) -> list[str]:
    complete = (t for t in trials if t.state == TrialState.COMPLETE)
    baseline = next((t for t in complete if t.user_attrs.get(TrialKey.BASELINE)), None)
    if baseline is None:
        return []
    name = str(baseline.user_attrs.get(TrialKey.BASELINE) or "seed network")
    return [f"{name[0].upper()}{name[1:]} (trial #{baseline.number}): {cv_line(baseline)}"]


def _best_lines(best: FrozenTrial) -> list[str]:
    """The best trial's size, training time and parameters."""
    extra = [cost_line(best)] if cost_line(best) else []
    if TrialKey.TRAIN_SECONDS in best.user_attrs:
        extra.append(f"{best.user_attrs[TrialKey.TRAIN_SECONDS]:.0f} s training")
    width = max(len(k) for k in best.params)
    return [
        *(["  " + ", ".join(extra)] if extra else []),
        "Parameters:",
        *(f"  {k:<{width}}  {_fmt(v)}" for k, v in best.params.items()),
    ]
