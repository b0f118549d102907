"""The one training recipe: how a built model is trained on arrays, by trials and by export alike.

A `Recipe` holds what a study tunes about training (epochs, batch size, optimizer, learning-rate
schedule, weight decay, label smoothing, augmentation). `train` applies it: batches that are
shuffled, warped and one-hot encoded the same way under every Keras backend
(`tuning.training.batches`), then `model.fit` with the schedule laid out over the real number of
steps. Trials call it on
their folds; `tuning export` calls it on all training images with `Recipe.scaled`'s epochs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from tuning import backend
from tuning.training.batches import make_dataset
from tuning.training.divergence import DivergenceGuard
from tuning.typed_json import check, one_of, rule

OPTIMIZERS = ("adam", "sgd", "rmsprop")
# warmup_cosine: a linear warm-up from a tenth of the rate over the first tenth of the steps,
# then the same cosine decay to zero.
SCHEDULES = ("constant", "cosine", "warmup_cosine")
WARMUP_FRACTION = 0.1
EVAL_BATCH = 512  # validation batches: larger is faster and changes nothing
# Batches per call into the compiled training step. On small CNNs the per-step Python overhead
# is a large share of a step; 16 steps per call trained the seed network 1.7x faster on 2 CPU
# cores, with identical updates (`python -m bench throughput`).
STEPS_PER_EXECUTION = 16


def _is_fraction(value: float) -> bool:
    return 0 <= value < 1


@dataclass(frozen=True)
class Recipe:
    """How to train: the defaults are the seed network's recipe (15 epochs of Adam at 1e-3,
    batch 32, cosine decay, rotation 10 degrees, shift and zoom 0.1, no label smoothing)."""

    epochs: int = field(default=15, metadata=rule(lambda v: v >= 1, "an integer >= 1"))
    batch_size: int = field(default=32, metadata=rule(lambda v: v >= 1, "an integer >= 1"))
    optimizer: str = field(default="adam", metadata=one_of(OPTIMIZERS))
    learning_rate: float = field(default=1e-3, metadata=rule(lambda v: v > 0, "a number > 0"))
    schedule: str = field(default="cosine", metadata=one_of(SCHEDULES))
    weight_decay: float = field(default=0.0, metadata=rule(lambda v: v >= 0, "a number >= 0"))
    label_smoothing: float = field(default=0.0, metadata=rule(_is_fraction, "a number in [0, 1)"))
    # Augmentation: degrees either way, a fraction of the image side either way, in or out.
    rotation: float = field(
        default=10.0, metadata=rule(lambda v: 0 <= v <= 180, "degrees in 0..180")
    )
    shift: float = field(default=0.1, metadata=rule(_is_fraction, "a fraction in [0, 1)"))
    zoom: float = field(default=0.1, metadata=rule(_is_fraction, "a fraction in [0, 1)"))

    def __post_init__(self) -> None:
        check(self)  # a recipe built in code obeys the rules a stored one is read by

    @property
    def augments(self) -> bool:
        return bool(self.rotation or self.shift or self.zoom)

    def scaled(self, epoch_scale: float) -> Recipe:
        """The same recipe for `epoch_scale` times the epochs (at least one); the schedule is
        laid out over the new length, so a short run is a compressed copy of the long one."""
        if epoch_scale <= 0:
            raise ValueError(f"epoch_scale must be > 0. Received: epoch_scale={epoch_scale!r}")
        return dataclasses.replace(self, epochs=max(1, round(self.epochs * epoch_scale)))


def learning_rate(recipe: Recipe, *, steps_per_epoch: int) -> Any:
    """The recipe's learning rate: a float, or a per-step Keras schedule over the whole run."""
    if recipe.schedule == "constant":
        return recipe.learning_rate
    total = max(1, recipe.epochs * steps_per_epoch)
    if recipe.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=total)
    warmup = max(1, round(total * WARMUP_FRACTION))
    return keras.optimizers.schedules.CosineDecay(
        recipe.learning_rate * 0.1,
        decay_steps=max(1, total - warmup),
        warmup_target=recipe.learning_rate,
        warmup_steps=warmup,
    )


def make_optimizer(recipe: Recipe, *, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    """The recipe's optimizer (SGD with Nesterov momentum 0.9) with decoupled weight decay."""
    rate = learning_rate(recipe, steps_per_epoch=steps_per_epoch)
    decay = recipe.weight_decay or None
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(rate, weight_decay=decay)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True, weight_decay=decay)
    return keras.optimizers.RMSprop(rate, weight_decay=decay)


def compile_model(
    model: keras.Model,
    recipe: Recipe,
    *,
    steps_per_epoch: int = 1,
    steps_per_execution: int = STEPS_PER_EXECUTION,
) -> None:
    """Compile `model` (softmax outputs, one-hot labels) with the recipe's optimizer and loss."""
    model.compile(
        optimizer=make_optimizer(recipe, steps_per_epoch=steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=backend.steps_per_execution(steps_per_execution),
    )


def train(
    model: keras.Model,
    recipe: Recipe,
    x: np.ndarray,
    y: np.ndarray,
    *,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    seed: int | None = None,
    steps_per_execution: int = STEPS_PER_EXECUTION,
) -> keras.callbacks.History:
    """Train `model` on (x, y) by `recipe`; returns Keras' per-epoch `History`.

    `x` is (N, H, W, C) in 0..255 and `y` holds integer labels; the model is (re)compiled here,
    so its schedule spans exactly `recipe.epochs` epochs of these images. `seed` fixes the
    shuffling and augmentation (default: drawn from NumPy's global generator, which
    `keras.utils.set_random_seed` seeds).

    Raises:
        TrainingDivergedError: the training loss became NaN or infinite.
    """
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(
            f"x and y must be non-empty and of one length. Received: {len(x)}, {len(y)}"
        )
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    num_classes = int(model.output_shape[-1])
    steps = math.ceil(len(y) / recipe.batch_size)
    compile_model(model, recipe, steps_per_epoch=steps, steps_per_execution=steps_per_execution)
    data = make_dataset(
        x, y, num_classes=num_classes, batch_size=recipe.batch_size, recipe=recipe, seed=seed
    )
    validation = None
    if validation_data is not None:
        validation = make_dataset(*validation_data, num_classes=num_classes, batch_size=EVAL_BATCH)
    callbacks = list(callbacks or [])
    if not any(isinstance(c, DivergenceGuard) for c in callbacks):  # cv's fold guard says where
        callbacks.append(DivergenceGuard())
    return model.fit(
        data,
        epochs=recipe.epochs,
        shuffle=False,  # the dataset reshuffles every epoch itself
        validation_data=validation,
        callbacks=callbacks,
        verbose=0,
    )
