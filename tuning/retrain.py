"""Retrain one configuration on every training image, the way `tuning export` does.

A study scores configurations on a subset, for few epochs; the final model gets all images, more
epochs, a decaying learning rate and light augmentation. Augmentation runs in the input pipeline,
so the trained model is exactly the study's architecture and inference never sees it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import optuna

from tuning.config import ExportSettings
from tuning.errors import TrainingDivergedError
from tuning.hp import OptunaHyperParameters
from tuning.space import CNNHyperModel

EpochFn = Callable[[int, int, dict[str, float]], None]
"""Called as `on_epoch(epoch, epochs, logs)` after every epoch (epoch counts from 1)."""


@dataclass(frozen=True)
class Retrained:
    """A model trained on all images, its per-epoch training curves and what it cost."""

    model: keras.Model
    history: dict[str, list[float]] = field(repr=False)
    seconds: float
    epochs: int
    batch_size: int
    learning_rate: float


def learning_rate_at(epoch: int, *, base: float, epochs: int, schedule: str) -> float:
    """The learning rate for `epoch` (from 0): constant, or a cosine decay from `base` towards 0
    that reaches base/2 halfway and base·(1 - cos(pi/epochs))/2 in the last epoch."""
    if schedule == "constant" or epochs <= 1:
        return base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"schedule must be 'cosine' or 'constant'. Received: {schedule!r}")


def augmenter(settings: ExportSettings, *, seed: int) -> keras.Sequential | None:
    """Random rotation, shift and zoom (black fill, like MNIST's background), or None if off."""
    if not settings.augment:
        return None
    layers: list[keras.layers.Layer] = []
    if settings.rotation:
        layers.append(
            keras.layers.RandomRotation(settings.rotation / 360.0, fill_mode="constant", seed=seed)
        )
    if settings.shift:
        layers.append(
            keras.layers.RandomTranslation(
                settings.shift, settings.shift, fill_mode="constant", seed=seed + 1
            )
        )
    if settings.zoom:
        layers.append(
            keras.layers.RandomZoom(
                (-settings.zoom, settings.zoom), fill_mode="constant", seed=seed + 2
            )
        )
    return keras.Sequential(layers, name="augment") if layers else None


def _dataset(
    x: np.ndarray, y: np.ndarray, *, batch_size: int, augment: keras.Sequential | None, seed: int
) -> Any:
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y))
    data = data.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment is not None:
        data = data.map(
            lambda images, labels: (augment(images, training=True), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return data.prefetch(tf.data.AUTOTUNE)


class _EpochWatch(keras.callbacks.Callback):
    def __init__(self, epochs: int, on_epoch: EpochFn | None) -> None:
        super().__init__()
        self.epochs = epochs
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items()}
        if not math.isfinite(values.get("loss", math.nan)):
            raise TrainingDivergedError(
                f"retraining loss became {values.get('loss')} in epoch {epoch + 1}"
            )
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, self.epochs, values)


def retrain(
    params: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    *,
    settings: ExportSettings,
    seed: int,
    num_classes: int = 10,
    precision: str = "float32",
    on_epoch: EpochFn | None = None,
) -> Retrained:
    """Build the configuration `params` (a trial's parameters) and train it on all of (x, y).

    `x` is (N, 28, 28, 1) in 0..255. `settings.epochs` replaces the trial's epochs; the trial's
    learning rate starts `settings.schedule`. The caller clears the Keras session afterwards.

    Raises:
        TrainingDivergedError: the training loss became NaN or infinite.
    """
    keras.utils.set_random_seed(seed)
    hypermodel = CNNHyperModel(
        max_epochs=max(settings.epochs, int(params.get("epochs", 1))),
        num_classes=num_classes,
        input_shape=tuple(x.shape[1:]),
        precision=precision,
    )
    hp = OptunaHyperParameters(optuna.trial.FixedTrial(params))  # type: ignore[arg-type]
    model = hypermodel.build(hp)
    batch_size = int(hypermodel.fit_options(hp)["batch_size"])
    base_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    epochs = settings.epochs

    def rate(epoch: int, _current: float) -> float:
        return learning_rate_at(epoch, base=base_rate, epochs=epochs, schedule=settings.schedule)

    data = _dataset(x, y, batch_size=batch_size, augment=augmenter(settings, seed=seed), seed=seed)
    start = time.perf_counter()
    history = model.fit(
        data,
        epochs=epochs,
        shuffle=False,  # the dataset reshuffles every epoch itself
        callbacks=[keras.callbacks.LearningRateScheduler(rate), _EpochWatch(epochs, on_epoch)],
        verbose=0,
    )
    seconds = time.perf_counter() - start
    curves = {k: [float(v) for v in values] for k, values in history.history.items()}
    return Retrained(model, curves, seconds, epochs, batch_size, base_rate)
