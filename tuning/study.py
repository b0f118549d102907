"""Create or resume an Optuna study whose objective is the k-fold CV accuracy of a HyperModel."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from tuning.artifacts import artifact_store
from tuning.config import StudySpec, resumable_protocol
from tuning.curves import attach_curves
from tuning.cv import cross_validate
from tuning.data import load_mnist, stratified_subset
from tuning.device import detect, resolve_precision
from tuning.errors import StudyMismatchError, TrainingDivergedError
from tuning.hp import OptunaHyperParameters
from tuning.notes import write_study_note
from tuning.space import CNNHyperModel, describe_space, seed_params, space_fingerprint
from tuning.storage import open_storage, redact, resolve_storage_url

ProgressFn = Callable[[str], None]
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
# What the dashboard's charts call the objective (instead of "Objective 0").
METRIC_NAME = "CV accuracy"


def library_versions() -> dict[str, str]:
    """Versions, and the device, that decide what a trial computes; recorded on every trial."""
    import keras
    import keras_tuner
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_tuner": keras_tuner.__version__,
        "optuna": optuna.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "device": detect().describe(),
    }


def make_sampler(spec: StudySpec, *, offset: int = 0, salt: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with `seed + offset + salt`.

    `offset` (trials already stored) keeps a resumed run from replaying the first run's random
    start-up draws; `salt` differs between parallel workers so they do not draw the same points.
    """
    seed = spec.seed + offset + salt
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        n_startup_trials=spec.search.n_startup_trials,
        multivariate=True,
        group=True,  # conditional parameters (deeper blocks) get their own joint model
        constant_liar=True,  # parallel workers do not all sample the same point
        seed=seed,
    )


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner; `report_steps` explains the steps it sees."""
    fid = spec.fidelity
    if spec.search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=fid.max_epochs + fid.folds, reduction_factor=3
        )
    if spec.search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if spec.search.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    return optuna.pruners.NopPruner()


def open_study(
    spec: StudySpec,
    *,
    storage: str | None,
    data_sha256: str,
    hypermodel: CNNHyperModel,
    salt: int = 0,
) -> optuna.Study:
    """Create the study, or load it if it exists and was made with the same protocol.

    The process that creates the study stores the search space and the protocol (data hash,
    space fingerprint, fidelity), then enqueues the seed network as the first trial; a worker
    that loads it at the same moment waits for the protocol instead of writing it twice.

    Raises:
        StudyMismatchError: the stored study differs in search space, folds, fidelity or data.
    """
    url = resolve_storage_url(storage)
    space = describe_space(hypermodel)
    requested = spec.fidelity.precision
    expected: dict[str, Any] = {
        **spec.protocol(),
        # `auto` is resolved here, once: the stored protocol keeps the policy it became.
        "precision": resolve_precision(requested, detect()),
        "data_sha256": data_sha256,
        "space_fingerprint": space_fingerprint(space),
    }
    backend = open_storage(url)
    pruner = make_pruner(spec)
    try:
        # Study names are unique in the database, so exactly one process gets to create it.
        study = optuna.create_study(
            storage=backend, study_name=spec.name, direction="maximize", pruner=pruner
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=backend, study_name=spec.name, pruner=pruner)
        created = False
    stored = None if created else _wait_for_protocol(study)
    if stored is None and study.trials:
        raise StudyMismatchError(
            f"study '{spec.name}' in {redact(url)} was not created by a tuning study file; "
            f"give {spec.path} another [study] name"
        )
    if stored is None:
        study.set_user_attr("space", space)
        study.set_user_attr("study_file", str(spec.path))
        study.set_user_attr("versions", library_versions())
        study.set_user_attr("protocol", expected)
        if spec.enqueue_seed:
            study.enqueue_trial(
                seed_params(spec.fidelity.max_epochs), user_attrs={"baseline": "seed network"}
            )
    else:
        origin = study.user_attrs.get("study_file", "?")
        stored = resumable_protocol(stored)
        for key, want in expected.items():
            have = stored.get(key)
            if key == "precision" and requested == "auto":
                continue  # whatever `auto` became when the study was created
            if have != want:
                raise StudyMismatchError(
                    f"study '{spec.name}' in {redact(url)} was created from {origin} with "
                    f"{key}={have}, but {spec.path} and the data now give {key}={want}; restore "
                    "it, or give the study a new [study] name"
                )
    if study.metric_names is None:  # a new study, or one stored before the objective was named
        study.set_metric_names([METRIC_NAME])
    study.sampler = make_sampler(spec, offset=len(study.trials), salt=salt)
    return study


def study_precision(study: optuna.Study) -> str:
    """The Keras dtype policy the study's trials were scored in (what `auto` resolved to)."""
    return str(resumable_protocol(study.user_attrs.get("protocol") or {})["precision"])


def _wait_for_protocol(study: optuna.Study, timeout: float = 30.0) -> dict[str, Any] | None:
    """The stored protocol; waits while another process is still initialising the study."""
    deadline = time.monotonic() + timeout
    while True:
        attrs = study._storage.get_study_user_attrs(study._study_id)
        # Trials without a protocol mean the study was made by something else: no need to wait.
        if "protocol" in attrs or study.trials or time.monotonic() > deadline:
            return attrs.get("protocol")
        time.sleep(0.2)


def make_objective(
    hypermodel: CNNHyperModel,
    x: np.ndarray,
    y: np.ndarray,
    *,
    spec: StudySpec,
    on_progress: ProgressFn | None = None,
    artifacts: str | Path | None = None,
) -> Callable[[optuna.Trial], float]:
    """The Optuna objective: mean validation accuracy over the study's folds.

    Intermediate values, so that steps never collide: during fold 0, step `e` is the validation
    accuracy after epoch `e` (a learning curve, steps 0..max_epochs-1); after fold `f`, step
    `max_epochs + f` is the mean accuracy of the folds done so far. Under the Wilcoxon pruner,
    step `f` is fold `f`'s accuracy instead, as that pruner expects.

    A completed trial's per-epoch curves are attached to it as artifacts (`tuning.curves`) in
    `artifacts` (default: `$TUNING_ARTIFACTS`, else storage/artifacts).
    """
    fid = spec.fidelity
    store = artifact_store(artifacts)
    wilcoxon = spec.search.pruner == "wilcoxon"
    versions = library_versions()

    def objective(trial: optuna.Trial) -> float:
        hp = OptunaHyperParameters(trial)
        done: list[float] = []

        def maybe_prune(where: str) -> None:
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned {where}")

        def on_epoch(fold: int, epoch: int, accuracy: float) -> None:
            if fold == 0 and not wilcoxon:
                trial.report(accuracy, step=epoch)
                maybe_prune(f"at fold 1, epoch {epoch + 1}")

        def on_fold(fold: int, accuracy: float) -> None:
            done.append(accuracy)
            trial.set_user_attr("fold_accuracies", list(done))
            if on_progress:
                on_progress(f"trial {trial.number}: fold {fold + 1}/{fid.folds} {accuracy:.4f}")
            if fold + 1 < fid.folds:
                step, value = (
                    (fold, accuracy) if wilcoxon else (fid.max_epochs + fold, np.mean(done))
                )
                trial.report(float(value), step=step)
                maybe_prune(f"after fold {fold + 1}")

        trial.set_user_attr("versions", versions)
        start = time.perf_counter()
        try:
            result = cross_validate(
                lambda: hypermodel.build(hp),
                x,
                y,
                folds=fid.folds,
                seed=spec.seed,
                fit=lambda model, xs, ys, **kw: hypermodel.fit(hp, model, xs, ys, **kw),
                on_epoch=on_epoch,
                on_fold=on_fold,
            )
        except TrainingDivergedError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        trial.set_user_attr("cv_std", result.std)
        # Per-fold, per-epoch curves: a plot in the dashboard; export draws its own from them.
        attach_curves(
            trial,
            result.histories,
            store=store,
            title=f"{trial.study.study_name}, trial #{trial.number}: CV accuracy {result.mean:.4f}",
        )
        trial.set_user_attr("train_seconds", round(result.train_seconds, 2))
        trial.set_user_attr("trial_seconds", round(time.perf_counter() - start, 2))
        trial.set_user_attr("param_count", result.param_count)
        return result.mean

    return objective


def load_training_data(
    spec: StudySpec, data: str | Path | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """The study's training subset as (x with a channel axis, y, sha256 of the data file)."""
    images = load_mnist(data, split="train")
    x, y = stratified_subset(images.x, images.y, size=spec.fidelity.subset, seed=spec.seed)
    return x[..., None], y, images.sha256


@dataclass
class StudyRun:
    """A study opened for a run of trials: its data, storage, protocol and artifact folder have
    been checked, and nothing has been trained yet."""

    spec: StudySpec
    study: optuna.Study
    hypermodel: CNNHyperModel
    x: np.ndarray
    y: np.ndarray
    artifacts: str | Path | None = None

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
            self.x,
            self.y,
            spec=spec,
            on_progress=on_progress,
            artifacts=self.artifacts,
        )
        self.study.optimize(
            objective,
            n_trials=n_trials if n_trials is not None else spec.budget.trials,
            timeout=timeout if timeout is not None else spec.budget.timeout,
            catch=(TrainingDivergedError,),
            callbacks=callbacks,
            gc_after_trial=True,
        )
        return self.study


def open_run(
    spec: StudySpec,
    *,
    storage: str | None = None,
    data: str | Path | None = None,
    artifacts: str | Path | None = None,
    salt: int = 0,
) -> StudyRun:
    """Load the data, then create or resume `spec`'s study and rewrite its dashboard note.

    Everything a run needs is checked here, before any training, so a bad input fails at once.
    Parallel workers pass distinct `salt`s so their samplers differ.

    Raises:
        DataError, StorageError, StudyMismatchError: bad data, storage or stored protocol.
    """
    x, y, sha = load_training_data(spec, data)
    artifact_store(artifacts)  # an unwritable artifact folder fails now, not after a trial
    max_epochs = spec.fidelity.max_epochs
    study = open_study(
        spec,
        storage=storage,
        data_sha256=sha,
        hypermodel=CNNHyperModel(max_epochs=max_epochs),
        salt=salt,
    )
    hypermodel = CNNHyperModel(max_epochs=max_epochs, precision=study_precision(study))
    # The dashboard's study note: protocol, space, data hash, devices, export command.
    write_study_note(study, device=detect().describe())
    return StudyRun(spec, study, hypermodel, x, y, artifacts)


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
