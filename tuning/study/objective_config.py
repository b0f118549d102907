"""What a study file says about the objective: the `[objective]` table (directions, limits, when
to give up on a limit) and the rule `[export] pick` that chooses a trial on the front. Cost names
are `tuning.records.COST_NAMES`; what is stored with the study is `tuning.protocol.Objective`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tuning.errors import ConfigError
from tuning.protocol import Objective
from tuning.records import COST_NAMES
from tuning.typed_json import rule

_COSTS = ", ".join(COST_NAMES)
DIRECTIONS_EXPECTED = f'["accuracy"] or ["accuracy", "<cost>"] with <cost> one of {_COSTS}'
PICK_EXPECTED = f'"best" or "fewest <cost> within <x> points" with <cost> one of {_COSTS}'
_PICK = re.compile(rf"^fewest ({'|'.join(COST_NAMES)}) within (\d+(?:\.\d*)?|\.\d+) points?$")


def _directions_ok(value: tuple[str, ...]) -> bool:
    return (
        1 <= len(value) <= 2
        and value[0] == "accuracy"
        and all(name in COST_NAMES for name in value[1:])
    )


@dataclass(frozen=True)
class ObjectiveSettings:
    """The `[objective]` table: `directions` (CV accuracy, maximised, then optionally one cost,
    minimised: a Pareto front), `limits` (cost name -> the most a network may cost; one over a
    limit is infeasible and stops before it trains) and `give_up_after` (a run stops, saying so,
    after that many infeasible trials in a row)."""

    directions: tuple[str, ...] = field(
        default=("accuracy",), metadata=rule(_directions_ok, DIRECTIONS_EXPECTED)
    )
    limits: dict[str, float] = field(default_factory=dict)
    give_up_after: int = field(default=50, metadata=rule(lambda v: v >= 1, "an integer >= 1"))

    @property
    def stored(self) -> Objective:
        """What the study's protocol stores of it (give_up_after changes no score)."""
        return Objective(directions=self.directions, limits=dict(self.limits))


def check_objective(path: Path, objective: ObjectiveSettings, pruner: str | None) -> None:
    """What the field rules cannot say: each limit's name and value, and no Optuna pruner beside
    a second direction.

    Raises:
        ConfigError: one line naming `path` and the field.
    """
    for name, value in objective.limits.items():
        if name not in COST_NAMES:
            raise ConfigError(
                f"{path}: 'objective.limits.{name}' is not a cost; expected one of {_COSTS}"
            )
        if not value > 0:
            raise ConfigError(
                f"{path}: 'objective.limits.{name}' must be a number > 0. Received: {value:g}"
            )
    if len(objective.directions) > 1 and pruner not in (None, "none"):
        raise ConfigError(
            f"{path}: 'search.pruner' cannot be used with two directions (Optuna's pruners do "
            "not work with two objectives; leave it out for the dominance stop, or give "
            f'"none"). Received: pruner={pruner!r}, directions={list(objective.directions)}'
        )


@dataclass(frozen=True)
class PickRule:
    """Which trial an export takes among the feasible trials at the highest rung reached:
    the most accurate (`cost` None), or the one of fewest `cost` among those within
    `within_points` percentage points of the most accurate's CV accuracy."""

    cost: str | None = None
    within_points: float = 0.0

    @classmethod
    def parse(cls, text: str) -> PickRule:
        """`text` in the rule's grammar: "best" or "fewest <cost> within <x> points".

        Raises:
            ValueError: `text` is not a rule, saying what one is.
        """
        words = " ".join(text.split())
        if words == "best":
            return cls()
        match = _PICK.match(words)
        if match is None:
            raise ValueError(f"a pick rule must be {PICK_EXPECTED}. Received: {text!r}")
        return cls(cost=match[1], within_points=float(match[2]))

    def describe(self) -> str:
        if self.cost is None:
            return "best"
        return f"fewest {self.cost} within {self.within_points:g} points"


def is_pick_rule(text: str) -> bool:
    """Whether `text` parses as a `PickRule` (the field rule of `[export] pick`)."""
    try:
        PickRule.parse(text)
    except ValueError:
        return False
    return True
