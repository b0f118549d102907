"""What every HyperModel a study tries shares: the tuned training recipe (`recipe_space`, the
recipe half of the search space) and `fit`, which trains a built network by it through
`tuning.training.recipe.train`, the one training function that trials and `tuning export` share.

`RecipeHyperModel` is that shared base. The built-in CNN space (`tuning.study.space`) and a
study file's own HyperModel (`tuning.study.hypermodels`) each add only their network.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from tuning.study.config import POLICIES
from tuning.training import recipe as recipes
from tuning.training.recipe import OPTIMIZERS, SCHEDULES, Recipe

BATCH_SIZES = (32, 64, 128, 256)
# Decoupled: each step shrinks weights by learning_rate x weight_decay (AdamW-style values).
WEIGHT_DECAYS = (0.0, 0.005, 0.02, 0.05)
LABEL_SMOOTHINGS = (0.0, 0.05, 0.1)
ROTATIONS = (0, 5, 10, 15)
SHIFTS = (0.0, 0.05, 0.1, 0.15)
ZOOMS = (0.0, 0.05, 0.1, 0.15)
SEED_EPOCHS = 15  # the seed network's epochs, the recipe's default


def epoch_range(max_epochs: int) -> tuple[int, int]:
    """The epochs a recipe may ask for: from a third of `max_epochs` (never above the seed's 15)
    to `max_epochs`, so that no trial is a waste of a few epochs."""
    return max(1, min(SEED_EPOCHS, max_epochs // 3)), max_epochs


def recipe_space(hp: Any, max_epochs: int) -> Recipe:
    """The training recipe's hyperparameters, declared through `hp` (KerasTuner's or Optuna's),
    as a `Recipe`. Every default is the seed network's recipe: 15 epochs of Adam at 1e-3, batch
    32, cosine decay, rotation 10, shift and zoom 0.1."""
    low, high = epoch_range(max_epochs)
    return Recipe(
        epochs=hp.Int("epochs", low, high, default=min(SEED_EPOCHS, high)),
        batch_size=hp.Choice("batch_size", list(BATCH_SIZES), default=32),
        optimizer=hp.Choice("optimizer", list(OPTIMIZERS), default="adam"),
        learning_rate=hp.Float("learning_rate", 1e-4, 3e-2, sampling="log", default=1e-3),
        schedule=hp.Choice("schedule", list(SCHEDULES), default="cosine"),
        weight_decay=hp.Choice("weight_decay", list(WEIGHT_DECAYS), default=0.0),
        label_smoothing=hp.Choice("label_smoothing", list(LABEL_SMOOTHINGS), default=0.0),
        rotation=hp.Choice("rotation", list(ROTATIONS), default=10),
        shift=hp.Choice("shift", list(SHIFTS), default=0.1),
        zoom=hp.Choice("zoom", list(ZOOMS), default=0.1),
    )


class RecipeHyperModel(kt.HyperModel):
    """A network (`_make_model`, by the subclass) for images of `input_shape` in `num_classes`
    classes, built under the `precision` dtype policy and trained by its tuned recipe.

    `baseline_label` names the study's first trial, the HyperModel's defaults; `own_fit` is True
    when the network is trained by its own `fit` instead of the recipe."""

    baseline_label = "HyperModel defaults"
    own_fit = False

    def __init__(
        self,
        *,
        max_epochs: int = SEED_EPOCHS,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (28, 28, 1),
        precision: str = "float32",
    ) -> None:
        super().__init__(name=type(self).__name__)
        if precision not in POLICIES:
            raise ValueError(f"precision must be one of {', '.join(POLICIES)}: {precision!r}")
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1. Received: max_epochs={max_epochs}")
        self.max_epochs = max_epochs
        self.num_classes = num_classes
        self.input_shape = input_shape
        self.precision = precision

    def with_precision(self, precision: str) -> RecipeHyperModel:
        """The same HyperModel building under another dtype policy (what "auto" became when the
        study was created, on whatever machine created it)."""
        if precision not in POLICIES:
            raise ValueError(f"precision must be one of {', '.join(POLICIES)}: {precision!r}")
        other = copy.copy(self)
        other.precision = precision
        return other

    def build(self, hp: Any) -> keras.Model:
        """The network for `hp`, made under the `precision` dtype policy and compiled with its
        recipe (`fit` compiles it again once the number of steps is known)."""
        model = self._make_under_policy(hp)
        if not self.own_fit:
            recipes.compile_model(model, self.recipe(hp))
        return model

    def _make_under_policy(self, hp: Any) -> keras.Model:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.precision)
        try:
            return self._make_model(hp)
        finally:
            keras.config.set_dtype_policy(previous)

    def _make_model(self, hp: Any) -> keras.Model:  # not `_build`: KerasTuner uses that name
        raise NotImplementedError

    def recipe(self, hp: Any) -> Recipe:
        """How `hp`'s network is trained: the recipe hyperparameters of the space."""
        return recipe_space(hp, self.max_epochs)

    def defaults(self) -> dict[str, Any]:
        """The baseline trial's parameters: every hyperparameter's default."""
        hp = kt.HyperParameters()
        self.build(hp)
        keras.backend.clear_session()
        return dict(hp.values)

    def fit(
        self,
        hp: Any,
        model: keras.Model,
        x: np.ndarray,
        y: np.ndarray,
        *,
        epoch_scale: float = 1.0,
        epochs: int | None = None,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
        seed: int | None = None,
        **_: Any,
    ) -> keras.callbacks.History:
        """Train `model` by `hp`'s recipe with its epochs times `epoch_scale` (`epochs`, which
        KerasTuner's Hyperband passes, replaces them). Other Keras `fit` options are ignored:
        the recipe decides batching, shuffling and verbosity."""
        recipe = self.recipe(hp).scaled(epoch_scale)
        if epochs is not None:
            recipe = dataclasses.replace(recipe, epochs=epochs)
        return recipes.train(
            model, recipe, x, y, validation_data=validation_data, callbacks=callbacks, seed=seed
        )
