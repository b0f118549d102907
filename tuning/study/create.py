"""Create a study, or resume it: the process that creates it stores its search space and
protocol and enqueues its first trials; every later run checks that the stored protocol is the
one it would use, so a study never mixes scores that mean different things."""

from __future__ import annotations

import time
from typing import Any

import optuna
from optuna.trial import TrialState

from tuning import backend
from tuning.device import detect, resolve_precision
from tuning.errors import StudyMismatchError
from tuning.protocol import Protocol
from tuning.reconnect import Reconnect
from tuning.records import StudyKey, library_versions, space_fingerprint
from tuning.storage import open_storage, redact, resolve_storage_url
from tuning.study.baseline import enqueue_first_trials, ensure_baseline, starting_points
from tuning.study.config import StudySpec
from tuning.study.hypermodels import make_hypermodel
from tuning.study.recipe_hypermodel import RecipeHyperModel
from tuning.study.sampling import make_pruner, make_sampler, study_directions
from tuning.study.space import describe_space

# What the dashboard's charts call the objective (instead of "Objective 0"); a second one is
# called by its cost's name.
METRIC_NAME = "CV accuracy"


def open_study(
    spec: StudySpec,
    *,
    storage: str | None,
    data_sha256: str,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    salt: int = 0,
    reconnect: Reconnect | None = None,
) -> tuple[optuna.Study, RecipeHyperModel]:
    """Create `spec`'s study, or load it if it exists with the same protocol; with it, the
    study's HyperModel for images of `input_shape` in `num_classes` classes, in the precision
    the study's trials are scored in. Parallel workers pass distinct `salt`s so their samplers
    differ. A lost database is waited for as `reconnect` says (default: the study file's
    `[storage] retry_minutes`, silently).

    A worker that loads the study while another creates it waits for the protocol instead of
    writing it twice.

    Raises:
        ConfigError: the HyperModel or a starting point of the study file is unusable.
        StudyMismatchError: the stored study differs in search space, folds, fidelity, data or
            objective.
    """
    url = resolve_storage_url(storage)
    requested = spec.fidelity.precision
    hypermodel = make_hypermodel(
        spec,
        input_shape=input_shape,
        num_classes=num_classes,
        precision=resolve_precision(requested, detect()),  # "auto" is resolved here, once
    )
    space = describe_space(hypermodel)
    defaults = hypermodel.defaults()
    points = starting_points(spec, space, defaults)  # a bad one fails before anything is stored
    expected = spec.protocol(
        precision=hypermodel.precision,
        backend=backend.name(),
        data_sha256=data_sha256,
        space_fingerprint=space_fingerprint(space),
    )
    if reconnect is None:
        reconnect = Reconnect(seconds=spec.storage.retry_minutes * 60)
    study, created = _create_or_load(spec, url, reconnect)
    stored = None if created else _wait_for_protocol(study)
    if stored is None and study.trials:
        raise StudyMismatchError(
            f"study '{spec.name}' in {redact(url)} was not created by a tuning study file; "
            f"give {spec.path} another [study] name"
        )
    if stored is None:
        enqueue_first_trials(study, spec, hypermodel, defaults, points)
        _record_creation(study, spec, space, expected)
    else:
        origin = study.user_attrs.get(StudyKey.STUDY_FILE, "?")
        subject = f"study '{spec.name}' in {redact(url)} (created from {origin})"
        remedy = f"give {spec.path} a new [study] name, or restore what changed"
        previous = Protocol.read(stored, study=subject, remedy=remedy)
        if previous.backend != expected.backend:
            raise StudyMismatchError(
                f"{subject} was scored under the {previous.backend} backend, but this run uses "
                f"{expected.backend}; run it with KERAS_BACKEND={previous.backend}, or give "
                f"{spec.path} a new [study] name"
            )
        # `auto` keeps whatever it became when the study was created.
        ignore = ("precision",) if requested == "auto" else ()
        expected.check(previous, study=subject, remedy=remedy, ignore=ignore)
        hypermodel = hypermodel.with_precision(previous.precision)
        if spec.enqueue_seed:
            ensure_baseline(study, defaults, label=hypermodel.baseline_label)
    if study.metric_names is None:
        study.set_metric_names([METRIC_NAME, *spec.objective.directions[1:]])
    study.sampler = make_sampler(spec, offset=len(study.trials), salt=salt)
    return study, hypermodel


def _record_creation(
    study: optuna.Study, spec: StudySpec, space: list[dict[str, Any]], protocol: Protocol
) -> None:
    study.set_user_attr(StudyKey.SPACE, space)
    study.set_user_attr(StudyKey.STUDY_FILE, str(spec.path))
    study.set_user_attr(StudyKey.VERSIONS, library_versions())
    # The protocol last: it tells other workers the study is ready.
    study.set_user_attr(StudyKey.PROTOCOL, protocol.to_attr())


def stored_protocol(study: optuna.Study, *, remedy: str) -> Protocol:
    """The protocol stored on `study`.

    Raises:
        StudyMismatchError: it predates this protocol version, or is malformed.
    """
    stored = study.user_attrs.get(StudyKey.PROTOCOL)
    return Protocol.read(stored, study=f"study '{study.study_name}'", remedy=remedy)


def _create_or_load(spec: StudySpec, url: str, reconnect: Reconnect) -> tuple[optuna.Study, bool]:
    storage = open_storage(url, reconnect=reconnect)
    pruner = make_pruner(spec)
    try:
        # Study names are unique in the database, so exactly one process gets to create it.
        study = optuna.create_study(
            storage=storage, study_name=spec.name, directions=study_directions(spec), pruner=pruner
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(storage=storage, study_name=spec.name, pruner=pruner), False


def _wait_for_protocol(study: optuna.Study, timeout: float = 30.0) -> dict[str, object] | None:
    """The stored protocol; waits while another process is still initialising the study."""
    deadline = time.monotonic() + timeout
    while True:
        attrs = study.user_attrs
        # Trials without a protocol mean the study was made by something else: no need to wait.
        # (The creator enqueues the baseline just before writing the protocol.)
        started = any(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))
        if StudyKey.PROTOCOL in attrs or started or time.monotonic() > deadline:
            return attrs.get(StudyKey.PROTOCOL)
        time.sleep(0.2)
