"""What `tuning transfer` tries, as a KerasTuner HyperModel: the new N-way head on the frozen base
(`build`) and the hyperparameters of how it is trained (`recipe`).

The space is written as KerasTuner hyperparameter configs (`SPACE`), which the dashboard note
prints as a table and the transfer study stores in its protocol. `recipe(hp)` declares each of
them through `hp`, so the same code answers KerasTuner's `HyperParameters` (defaults) and
`tuning.hp.OptunaHyperParameters` (a trial's sample): one adapter, as for the MNIST space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import keras_tuner as kt

from tuning.transfer.model import BaseModel, build

SPACE: list[dict[str, Any]] = [
    {"class": "Float", "name": "learning_rate", "min_value": 1e-3, "max_value": 3e-2,
     "sampling": "log", "default": 3e-3},
    {"class": "Int", "name": "epochs", "min_value": 10, "max_value": 60, "step": 10,
     "default": 30},
    {"class": "Float", "name": "augment", "min_value": 0.25, "max_value": 1.0, "step": 0.25,
     "default": 0.5},
    {"class": "Int", "name": "unfreeze", "min_value": 0, "max_value": 2, "default": 0},
]  # fmt: skip
KINDS = ("Int", "Float", "Choice", "Boolean", "Fixed")


class TransferHyperModel(kt.HyperModel):
    """The head on `base` for `num_classes` classes, trained by a recipe drawn from `space`."""

    def __init__(
        self, base: BaseModel, num_classes: int, space: Sequence[Mapping[str, Any]] = SPACE
    ) -> None:
        super().__init__(name="transfer")
        for config in space:
            if config.get("class") not in KINDS or "name" not in config:
                raise ValueError(
                    f"a transfer space entry needs a 'name' and a 'class' among {', '.join(KINDS)}"
                    f". Received: {dict(config)}"
                )
        self.base = base
        self.num_classes = num_classes
        self.space = [dict(config) for config in space]

    def recipe(self, hp: Any) -> dict[str, Any]:
        """Declare every hyperparameter of the space through `hp`; their values by name."""
        values = {}
        for config in self.space:
            arguments = {k: v for k, v in config.items() if k not in ("class", "conditions")}
            values[config["name"]] = getattr(hp, config["class"])(**arguments)
        return values

    def defaults(self) -> dict[str, Any]:
        """The recipe every config's default gives: the transfer study's first trial."""
        return self.recipe(kt.HyperParameters())

    def build(self, hp: Any) -> keras.Model:
        """The frozen base with a fresh N-way softmax head (the recipe only trains it)."""
        self.recipe(hp)
        return build(self.base, self.num_classes)
