"""What a trial's network costs, stored on the trial before it trains, and the `[objective]`
limits it must meet, as Optuna constraints: a network over a limit is infeasible, stops before
it trains, and after `give_up_after` of them in a row the run stops, saying which limit no
network met.

Each limit is one constraint, (cost - limit) / limit, feasible at 0 or below. It is written
twice: by `Trial.set_constraint` (Optuna 5's `constraints:<name>` system attributes, which TPE
and `Study.best_trial` read) and as the older `constraints` list, the only form that
optuna-dashboard 0.21's serializer reads. Optuna reads both, so `FrozenTrial.constraints` holds
each value twice (under its name and its index): feasibility is the same, and TPE's ranking of
infeasible trials (the sum of their violations) only doubles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial

from tuning.errors import ConfigError
from tuning.protocol import format_limit
from tuning.records import ModelCost, TrialKey

# Where a trial stores each cost a study file may name.
COST_KEYS = {
    "params": TrialKey.PARAM_COUNT,
    "flops": TrialKey.FLOPS,
    "latency_ms": TrialKey.LATENCY_MS,
}
DASHBOARD_CONSTRAINTS = "constraints"  # the system attribute optuna-dashboard 0.21 reads


def record_cost(trial: optuna.Trial, cost: ModelCost) -> None:
    """Store `cost` on `trial` as user attributes (what is unknown is left out)."""
    attrs: dict[str, object] = {TrialKey.PARAM_COUNT: cost.params}
    if cost.flops is not None:
        attrs[TrialKey.FLOPS] = cost.flops
    if cost.unknown_layers:
        attrs[TrialKey.FLOPS_UNKNOWN] = list(cost.unknown_layers)
    if cost.latency is not None:
        attrs[TrialKey.LATENCY_MS] = round(cost.latency.batch1_ms, 4)
        attrs[TrialKey.LATENCY_B256_MS] = round(cost.latency.batch256_ms, 4)
        attrs[TrialKey.LATENCY_THREADS] = cost.latency.threads
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def trial_costs(trial: FrozenTrial) -> dict[str, float]:
    """The costs stored on `trial`, by cost name; a cost it has no record of is left out."""
    return {
        name: float(trial.user_attrs[key])
        for name, key in COST_KEYS.items()
        if isinstance(trial.user_attrs.get(key), int | float)
    }


def known_cost(cost: ModelCost, name: str, *, trial: int) -> float:
    """`cost`'s value called `name`.

    Raises:
        ConfigError: it is unknown (a layer without a FLOP count, latency not measured), so no
            limit or direction can use it.
    """
    value = cost.value(name)
    if value is None:
        why = (
            f"layers without a FLOP count: {', '.join(cost.unknown_layers)}"
            if name == "flops"
            else "it was not measured"
        )
        raise ConfigError(
            f"trial #{trial}'s {name} is unknown ({why}), so the [objective] cannot use it; "
            f"remove {name} from 'objective.limits' and 'objective.directions'"
        )
    return value


def apply_limits(trial: optuna.Trial, cost: ModelCost, limits: Mapping[str, float]) -> list[str]:
    """Set `trial`'s constraint for each limit (both forms, see the module) and return the
    limits its network breaks, in words ("flops 22,756,816 > 4,551,363"); none: feasible.

    Raises:
        ConfigError: a limited cost is unknown for this network.
    """
    broken, values = [], []
    for name, limit in limits.items():
        value = known_cost(cost, name, trial=trial.number)
        values.append((value - limit) / limit)
        trial.set_constraint(name, values[-1])
        if value > limit:
            broken.append(f"{name} {format_limit(value)} > {format_limit(limit)}")
    if values:
        trial.storage.set_trial_system_attr(trial._trial_id, DASHBOARD_CONSTRAINTS, values)
    return broken


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether `trial` met every limit (a trial of a study without limits always does)."""
    return all(value <= 0 for value in trial.constraints.values())


def infeasible_streak(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The finished trials over a limit since the last finished one that was not, in order."""
    finished = sorted((t for t in trials if t.state.is_finished()), key=lambda t: t.number)
    streak: list[FrozenTrial] = []
    for trial in reversed(finished):
        if TrialKey.INFEASIBLE not in trial.user_attrs:
            break
        streak.append(trial)
    return streak[::-1]


def check_give_up(trials: Sequence[FrozenTrial], limits: Mapping[str, float], after: int) -> None:
    """Stop a study whose last `after` finished trials all broke a limit.

    Raises:
        ConfigError: one line naming the limits and the cheapest network seen for each.
    """
    streak = infeasible_streak(trials)
    if not limits or len(streak) < after:
        return
    cheapest = []
    for name in limits:
        seen = [(trial_costs(t)[name], t.number) for t in streak if name in trial_costs(t)]
        if seen:
            value, number = min(seen)
            cheapest.append(f"{format_limit(value)} {name} (trial #{number})")
    wanted = " and ".join(f"{name} <= {format_limit(v)}" for name, v in limits.items())
    raise ConfigError(
        f"no network in the space met {wanted} in {len(streak)} trials in a row; the cheapest "
        f"had {' and '.join(cheapest) or 'no recorded cost'}; raise the limit in "
        "'objective.limits' or give the space smaller networks"
    )
