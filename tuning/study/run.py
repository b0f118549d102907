"""Run a study: load its training data, create or resume it (`tuning.study.create`), and add
trials whose objective is the k-fold CV accuracy of the study's HyperModel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from tuning.artifacts import artifact_store
from tuning.device import detect
from tuning.errors import StorageError, TrainingDivergedError
from tuning.images.dataset import load_training
from tuning.images.folder import Skipped
from tuning.reconnect import Reconnect
from tuning.records import library_versions
from tuning.study.config import StudySpec
from tuning.study.create import open_study
from tuning.study.note import write_study_note
from tuning.study.objective import RungData, make_objective, rung_data
from tuning.study.recipe_hypermodel import RecipeHyperModel
from tuning.study.trial_cost import check_give_up

ProgressFn = Callable[[str], None]
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


@dataclass
class StudyRun:
    """A study opened for a run of trials: its data, storage, protocol and artifact folder have
    been checked, and nothing has been trained yet."""

    spec: StudySpec
    study: optuna.Study
    hypermodel: RecipeHyperModel
    data: list[RungData]
    artifacts: str | Path | None = None
    skipped: list[Skipped] = field(default_factory=list)  # unusable files of an image folder

    def optimize(
        self,
        *,
        n_trials: int | None = None,
        timeout: float | None = None,
        callbacks: list[Callback] | None = None,
        on_progress: ProgressFn | None = None,
    ) -> optuna.Study:
        """Add up to `n_trials` trials within `timeout` seconds (both default to [budget])."""
        spec = self.spec
        objective = make_objective(
            self.hypermodel,
            self.data,
            spec=spec,
            versions=library_versions(),
            on_progress=on_progress,
            artifacts=self.artifacts,
        )
        try:
            self.study.optimize(
                objective,
                n_trials=n_trials if n_trials is not None else spec.budget.trials,
                timeout=timeout if timeout is not None else spec.budget.timeout,
                catch=(TrainingDivergedError,),
                callbacks=callbacks,
                gc_after_trial=True,
            )
        except Exception as exc:
            # A database lost for good surfaces from Optuna's trial cleanup as whatever that
            # cleanup raised next (an UnboundLocalError in Optuna 5.0): say what happened.
            cause = _storage_error(exc)
            if cause is None or cause is exc:
                raise
            raise cause from None
        # The note's rung correlations now include this run's trials.
        write_study_note(self.study, device=detect().describe())
        # A limit no network met: the objective stopped the run; say so, in one line.
        aim = spec.objective
        check_give_up(self.study.get_trials(deepcopy=False), aim.limits, aim.give_up_after)
        return self.study


def _storage_error(exc: BaseException) -> StorageError | None:
    """The storage error behind `exc`, following what each exception was raised during."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, StorageError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def open_run(
    spec: StudySpec,
    *,
    storage: str | None = None,
    data: str | Path | None = None,
    artifacts: str | Path | None = None,
    salt: int = 0,
    reconnect: Reconnect | None = None,
) -> StudyRun:
    """Load the data, then create or resume `spec`'s study and rewrite its dashboard note.

    Everything a run needs is checked here, before any training, so a bad input fails at once.
    `data` replaces the location of the study file's `[data] source`. Parallel workers pass
    distinct `salt`s so their samplers differ. A lost database is waited for as `reconnect`
    says (default: the study file's `[storage] retry_minutes`).

    Raises:
        ConfigError, DataError, StorageError, StudyMismatchError: bad study file, data, storage
            or stored protocol.
    """
    images = load_training(spec.data_source(data), class_names=spec.data.class_names)
    spec = spec.for_images(len(images.y))
    rungs = rung_data(spec, images)
    artifact_store(artifacts)  # an unwritable artifact folder fails now, not after a trial
    study, hypermodel = open_study(
        spec,
        storage=storage,
        data_sha256=images.sha256,
        input_shape=images.input_shape,
        num_classes=images.num_classes,
        salt=salt,
        reconnect=reconnect,
    )
    # The dashboard's study note: protocol, space, data hash, devices, export command.
    write_study_note(study, device=detect().describe())
    return StudyRun(spec, study, hypermodel, rungs, artifacts, images.skipped)


def run_study(
    spec: StudySpec,
    *,
    storage: str | None = None,
    data: str | Path | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    callbacks: list[Callback] | None = None,
    on_progress: ProgressFn | None = None,
    salt: int = 0,
    artifacts: str | Path | None = None,
) -> optuna.Study:
    """Create or resume `spec`'s study and add up to `n_trials` trials within `timeout` seconds.

    Both default to the study file's [budget]. A trial whose loss becomes NaN fails; the study goes
    on. Ctrl-C fails the running trial and re-raises `KeyboardInterrupt`. Parallel workers pass
    distinct `salt`s so their samplers differ.
    """
    run = open_run(spec, storage=storage, data=data, artifacts=artifacts, salt=salt)
    return run.optimize(
        n_trials=n_trials, timeout=timeout, callbacks=callbacks, on_progress=on_progress
    )
