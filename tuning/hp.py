"""An Optuna trial that answers KerasTuner's `hp.Int/Float/Choice/Boolean` calls.

With it, a KerasTuner `HyperModel.build(hp)` runs unchanged under Optuna: each `hp` call becomes
the matching `trial.suggest_*` call, and Optuna's define-by-run sampling makes a parameter that
is only reached in some branches (say, the filters of a third conv block) conditional for free.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import optuna


class OptunaHyperParameters:
    """The subset of `keras_tuner.HyperParameters` a HyperModel uses, backed by an Optuna trial."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self._scopes: list[tuple[str, list[Any]]] = []

    @property
    def values(self) -> dict[str, Any]:
        """The parameters sampled so far, like `HyperParameters.values`."""
        return dict(self.trial.params)

    def get(self, name: str) -> Any:
        if name not in self.trial.params:
            raise KeyError(f"hyperparameter {name!r} has not been sampled in this trial")
        return self.trial.params[name]

    def _active(self) -> bool:
        return all(self.trial.params.get(name) in values for name, values in self._scopes)

    @contextlib.contextmanager
    def conditional_scope(self, parent_name: str, parent_values: Any) -> Iterator[None]:
        """Inside the scope, parameters are sampled only while the parent has one of the values."""
        values = list(parent_values) if isinstance(parent_values, list | tuple) else [parent_values]
        self._scopes.append((parent_name, values))
        try:
            yield
        finally:
            self._scopes.pop()

    def Int(
        self,
        name: str,
        min_value: int,
        max_value: int,
        step: int | None = None,
        sampling: str = "linear",
        default: int | None = None,
        **_: Any,
    ) -> int | None:
        if not self._active():
            return None
        return self.trial.suggest_int(
            name, min_value, max_value, step=step or 1, log=_is_log(name, sampling)
        )

    def Float(
        self,
        name: str,
        min_value: float,
        max_value: float,
        step: float | None = None,
        sampling: str = "linear",
        default: float | None = None,
        **_: Any,
    ) -> float | None:
        if not self._active():
            return None
        log = _is_log(name, sampling)
        if log and step is not None:
            raise ValueError(f"hp.Float({name!r}): Optuna cannot combine step with log sampling")
        return self.trial.suggest_float(name, min_value, max_value, step=step, log=log)

    def Choice(
        self,
        name: str,
        values: Sequence[Any],
        ordered: bool | None = None,
        default: Any = None,
        **_: Any,
    ) -> Any:
        if not self._active():
            return None
        return self.trial.suggest_categorical(name, list(values))

    def Boolean(self, name: str, default: bool = False, **_: Any) -> bool | None:
        if not self._active():
            return None
        return bool(self.trial.suggest_categorical(name, [False, True]))

    def Fixed(self, name: str, value: Any, **_: Any) -> Any:
        """A constant; Optuna has no fixed distribution, so it is kept as a user attribute."""
        self.trial.set_user_attr(f"fixed.{name}", value)
        return value


def _is_log(name: str, sampling: str | None) -> bool:
    if sampling in (None, "linear"):
        return False
    if sampling == "log":
        return True
    raise ValueError(
        f"hyperparameter {name!r}: sampling must be 'linear' or 'log' under Optuna. "
        f"Received: sampling={sampling!r}"
    )
