"""The one guard against diverged training, for every place that trains: trial folds, export and
transfer. A Keras callback stops the run at the end of the first epoch whose loss is NaN or
infinite, with a `TrainingDivergedError` that says where."""

from __future__ import annotations

import math
from typing import Any

import keras

from tuning.errors import TrainingDivergedError


class DivergenceGuard(keras.callbacks.Callback):
    """Raise `TrainingDivergedError` when an epoch ends with a non-finite training loss.

    `where` names the run in the message, e.g. "fold 2, " gives "... in fold 2, epoch 3".
    """

    def __init__(self, where: str = "") -> None:
        super().__init__()
        self.where = where

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"training loss became {loss} in {self.where}epoch {epoch + 1}"
            )
