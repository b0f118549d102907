"""The training step of an export: the trial's network, rebuilt from its parameters, trained by
its own recipe (the function its trials were scored with) on every training image instead of a
fold, saved, and loaded back from the file the user gets, the way `tuning predict` loads it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import optuna
from optuna.trial import FrozenTrial

from tuning.export.plan import ExportPlan
from tuning.hp import OptunaHyperParameters
from tuning.memory import release_memory
from tuning.model.file import load_model_file
from tuning.model.formats import FILES
from tuning.study.rungs import rung_scores
from tuning.training.recipe import Recipe

MODEL_FILE = FILES["keras"]
EpochFn = Callable[[int, int, dict[str, float]], None]
"""Called as `on_epoch(epoch, epochs, logs)` after every epoch (epoch counts from 1; epochs is 0
when a HyperModel's own fit chooses them)."""


@dataclass(frozen=True)
class Retrained:
    """The exported network, loaded back from `path`; its recipe (None: the HyperModel's own
    fit), per-epoch `curves` and the seconds its training took."""

    model: keras.Model
    path: Path
    recipe: Recipe | None
    curves: dict[str, list[float]]
    seconds: float


def retrain(
    plan: ExportPlan,
    folder: Path,
    *,
    trial: FrozenTrial | None = None,
    seed: int | None = None,
    say: Callable[[str], None],
    on_epoch: EpochFn | None,
) -> Retrained:
    """Train `trial` (default: `plan.trial`) on all of `plan.train` with `seed` (default: the
    study's), save it as `folder/model.keras` and load it back safely."""
    hypermodel, trial = plan.hypermodel, trial or plan.trial
    seed = plan.spec.seed if seed is None else seed
    hp = OptunaHyperParameters(optuna.trial.FixedTrial(trial.params))  # type: ignore[arg-type]
    # A HyperModel with its own fit chooses its epochs; every other follows the tuned recipe.
    recipe = None if hypermodel.own_fit else hypermodel.recipe(hp).scaled(plan.settings.epoch_scale)
    epochs = "its own" if recipe is None else str(recipe.epochs)
    score = rung_scores(trial)
    cv = f"rung {max(score)} CV {score[max(score)]:.4f}" if score else "no CV score"
    say(
        f"retraining trial #{trial.number} ({cv}) with seed {seed} on {len(plan.train.y)} "
        f"images for {epochs} epochs"
    )
    keras.utils.set_random_seed(seed)
    model = hypermodel.build(hp)
    start = time.perf_counter()
    history = hypermodel.fit(
        hp,
        model,
        plan.train.x,
        plan.train.y,
        epoch_scale=plan.settings.epoch_scale,
        callbacks=_epoch_progress(recipe.epochs if recipe else 0, on_epoch),
        seed=seed,
    ).history
    seconds = time.perf_counter() - start
    # Trained on one-hot labels (label smoothing); users evaluate on integer labels.
    model.compile(
        optimizer=model.optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    path = folder / MODEL_FILE
    model.save(path)
    release_memory()
    # Everything after this point uses the file the user gets, loaded as `tuning predict` does.
    model = load_model_file(path)
    curves = {key: [float(v) for v in values] for key, values in history.items()}
    return Retrained(model, path, recipe, curves, seconds)


def _epoch_progress(epochs: int, on_epoch: EpochFn | None) -> list[Any]:
    """Keras callbacks that report each epoch as `on_epoch(epoch, epochs, logs)`."""
    if on_epoch is None:
        return []
    report = on_epoch
    return [
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: report(
                epoch + 1, epochs, {k: float(v) for k, v in (logs or {}).items()}
            )
        )
    ]
