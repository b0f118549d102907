"""Create or resume an Optuna study whose objective is the k-fold CV accuracy of a HyperModel."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tuning.artifacts import artifact_store
from tuning.device import detect, resolve_precision
from tuning.errors import ConfigError, DataError, StudyMismatchError, TrainingDivergedError
from tuning.images.dataset import DataSource, Images, load_images, resolve_source
from tuning.images.folder import Skipped
from tuning.images.mnist import stratified_subset
from tuning.records import (
    StudyKey,
    TrialKey,
    check_protocol,
    library_versions,
    space_fingerprint,
)
from tuning.storage import open_storage, redact, resolve_storage_url
from tuning.study import rungs
from tuning.study.config import StudySpec, resumable_protocol
from tuning.study.hypermodels import make_hypermodel
from tuning.study.note import write_study_note
from tuning.study.objective import RungData, make_objective
from tuning.study.space import CNNHyperModel, check_params, describe_space

ProgressFn = Callable[[str], None]
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
# What the dashboard's charts call the objective (instead of "Objective 0").
METRIC_NAME = "CV accuracy"


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
    """The study's pruner over its rungs (`tuning.study.rungs`)."""
    return rungs.make_pruner(spec.search.pruner, rungs=len(spec.fidelity.ladder))


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
    defaults = hypermodel.defaults()
    enqueue = starting_points(spec, space, defaults)
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
        # Before the protocol, which tells other workers the study is ready.
        enqueue_first_trials(study, spec, hypermodel, defaults, enqueue)
        study.set_user_attr(StudyKey.SPACE, space)
        study.set_user_attr(StudyKey.STUDY_FILE, str(spec.path))
        study.set_user_attr(StudyKey.VERSIONS, library_versions())
        study.set_user_attr(StudyKey.PROTOCOL, expected)
    else:
        origin = study.user_attrs.get(StudyKey.STUDY_FILE, "?")
        check_protocol(
            resumable_protocol(stored),
            expected,
            study=f"study '{spec.name}' in {redact(url)} (created from {origin})",
            remedy=f"give {spec.path} a new [study] name, or restore what changed",
            # `auto` keeps whatever it became when the study was created.
            ignore=("precision",) if requested == "auto" else (),
        )
    if study.metric_names is None:
        study.set_metric_names([METRIC_NAME])
    if spec.enqueue_seed and not created:
        ensure_baseline(study, defaults, label=baseline_label(hypermodel))
    study.sampler = make_sampler(spec, offset=len(study.trials), salt=salt)
    return study


def starting_points(
    spec: StudySpec, space: list[dict[str, Any]], defaults: dict[str, Any]
) -> list[dict[str, Any]]:
    """The [[study.enqueue]] tables as trials' parameters: the baseline's, overridden.

    Raises:
        ConfigError: a table names a hyperparameter the space lacks or a value it cannot take.
    """
    points = []
    for index, params in enumerate(spec.enqueue):
        try:
            check_params(space, params)
        except ValueError as exc:
            raise ConfigError(f"{spec.path}: [[study.enqueue]] number {index + 1}: {exc}") from None
        points.append({**defaults, **params})
    return points


def baseline_label(hypermodel: CNNHyperModel) -> str:
    """What trial 0 is: the built-in space's defaults are the student project's seed network."""
    return "seed network" if type(hypermodel) is CNNHyperModel else "HyperModel defaults"


def enqueue_first_trials(
    study: optuna.Study,
    spec: StudySpec,
    hypermodel: CNNHyperModel,
    defaults: dict[str, Any],
    points: list[dict[str, Any]],
) -> None:
    """A new study's first trials: the baseline (if the file asks for it), then the starting
    points, each of which climbs every rung."""
    if spec.enqueue_seed:
        ensure_baseline(study, defaults, label=baseline_label(hypermodel))
    for params in points:
        study.enqueue_trial(params, user_attrs={TrialKey.ENQUEUED_FROM: str(spec.path)})


def ensure_baseline(
    study: optuna.Study, params: dict[str, Any], *, label: str = "seed network"
) -> bool:
    """Enqueue the baseline, `params` (the seed network, or a HyperModel's defaults), unless
    a baseline trial has completed, is waiting, or is running with a live heartbeat; returns
    whether it enqueued one.

    A worker killed mid-trial leaves its trial RUNNING: stale ones are failed first, so a killed
    baseline is run again by whoever opens the study next.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # does nothing without a heartbeat
    states = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
    for trial in study.get_trials(deepcopy=False, states=states):
        if trial.user_attrs.get(TrialKey.BASELINE):
            return False
    study.enqueue_trial(params, user_attrs={TrialKey.BASELINE: label})
    return True


def study_precision(study: optuna.Study) -> str:
    """The Keras dtype policy the study's trials were scored in (what `auto` resolved to)."""
    return str(resumable_protocol(study.user_attrs.get(StudyKey.PROTOCOL) or {})["precision"])


def _wait_for_protocol(study: optuna.Study, timeout: float = 30.0) -> dict[str, Any] | None:
    """The stored protocol; waits while another process is still initialising the study."""
    deadline = time.monotonic() + timeout
    while True:
        attrs = study._storage.get_study_user_attrs(study._study_id)
        # Trials without a protocol mean the study was made by something else: no need to wait.
        # (The creator enqueues the baseline just before writing the protocol.)
        started = any(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))
        if StudyKey.PROTOCOL in attrs or started or time.monotonic() > deadline:
            return attrs.get(StudyKey.PROTOCOL)
        time.sleep(0.2)


def training_images(
    spec: StudySpec, data: str | Path | None, *, class_names: list[str] | None = None
) -> tuple[DataSource, Images]:
    """The study file's `[data] source` (its location replaced by `data`, its classes by
    `class_names` if given) and its training split. The test split is never read here."""
    source = resolve_source(spec.data.source, base=spec.path.parent, override=data)
    images = load_images(source, split="train", class_names=class_names or spec.data.class_names)
    if images is None:  # every source has a training split, or says why not
        raise DataError(f"{source.describe()}: no training split", param="data")
    return source, images


def rung_data(spec: StudySpec, images: Images) -> list[RungData]:
    """Each rung's stratified subset of `images` (a rung without a subset takes them all)."""
    out = []
    for rung in spec.for_images(len(images.y)).fidelity.ladder:
        size = rung.subset or len(images.y)
        x, y = stratified_subset(images.x, images.y, size=size, seed=spec.seed)
        _check_folds(y, rung.folds, images.class_names)
        out.append(RungData(rung, x, y))
    return out


def load_training_data(spec: StudySpec, data: str | Path | None) -> tuple[list[RungData], Images]:
    """Each rung's stratified training subset and the training split they come from (its
    sha256, class names, shape). `data` replaces the location of the study file's
    `[data] source`."""
    _, images = training_images(spec, data)
    return rung_data(spec, images), images


def _check_folds(y: Any, folds: int, class_names: list[str]) -> None:
    counts = {name: int((y == i).sum()) for i, name in enumerate(class_names)}
    short = {name: n for name, n in counts.items() if n < folds}
    if short:
        name, count = next(iter(short.items()))
        raise DataError(
            f"class '{name}' has {count} image(s) in a rung of {folds}-fold CV; each class "
            f"needs at least one image per fold (lower the rung's folds or add images)"
        )


@dataclass
class StudyRun:
    """A study opened for a run of trials: its data, storage, protocol and artifact folder have
    been checked, and nothing has been trained yet."""

    spec: StudySpec
    study: optuna.Study
    hypermodel: CNNHyperModel
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
        self.study.optimize(
            objective,
            n_trials=n_trials if n_trials is not None else spec.budget.trials,
            timeout=timeout if timeout is not None else spec.budget.timeout,
            catch=(TrainingDivergedError,),
            callbacks=callbacks,
            gc_after_trial=True,
        )
        # The note's rung correlations now include this run's trials.
        write_study_note(self.study, device=detect().describe())
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
    rung_data, images = load_training_data(spec, data)
    spec = spec.for_images(len(images.y))
    artifact_store(artifacts)  # an unwritable artifact folder fails now, not after a trial
    shape, classes = images.input_shape, images.num_classes
    study = open_study(
        spec,
        storage=storage,
        data_sha256=images.sha256,
        hypermodel=make_hypermodel(spec, input_shape=shape, num_classes=classes),
        salt=salt,
    )
    hypermodel = make_hypermodel(
        spec, input_shape=shape, num_classes=classes, precision=study_precision(study)
    )
    # The dashboard's study note: protocol, space, data hash, devices, export command.
    write_study_note(study, device=detect().describe())
    return StudyRun(spec, study, hypermodel, rung_data, artifacts, images.skipped)


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
