"""What studies and trials store, by name: the Optuna user attributes `tuning` writes and reads,
the version of the scoring protocol, and the library versions recorded beside every result.

Every writer and every reader uses these names, so a record means the same in the study, the
progress bar, the dashboard note, export and transfer.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Any

from tuning.errors import StudyMismatchError

# Bumped when what a stored score means changes; older studies are refused, not reinterpreted.
# 2: rungs and tuned training recipes (1: one fidelity, an untuned export recipe).
PROTOCOL_VERSION = 2


class StudyKey(StrEnum):
    """User attributes of a study."""

    PROTOCOL = "protocol"  # what every score depends on: rungs, seed, data hash, space, ...
    SPACE = "space"  # the search space, as KerasTuner hyperparameter configs
    STUDY_FILE = "study_file"  # the study file that created it
    VERSIONS = "versions"  # `library_versions()` at creation
    EXPORTS = "exports"  # trial number -> `ExportRecord` of each export made from it
    EXPORT = "export"  # the latest export's record and its card's artifact id
    TRANSFER = "transfer"  # a transfer study's result: accuracy, interval, output folder


class TrialKey(StrEnum):
    """User attributes of a trial."""

    RUNGS = "rungs"  # one `RungRecord` per rung climbed
    FOLD_ACCURACIES = "fold_accuracies"  # of the last rung finished
    CV_STD = "cv_std"  # of those folds
    CV_ACCURACY = "cv_accuracy"  # a transfer trial's nested-CV accuracy
    PARAM_COUNT = "param_count"
    TRAIN_SECONDS = "train_seconds"
    TRIAL_SECONDS = "trial_seconds"
    FAIL_REASON = "fail_reason"  # why a FAILED trial failed, in one line
    VERSIONS = "versions"  # `library_versions()` of the process that ran it
    BASELINE = "baseline"  # the seed network (or default transfer): never pruned, the yardstick
    ENQUEUED_FROM = "enqueued_from"  # a [[study.enqueue]] starting point: the study file
    FOLD_HISTORIES = "fold_histories"  # per-epoch curves, before they became artifacts


def library_versions() -> dict[str, str]:
    """Versions, and the device, that decide what a trial computes; recorded on every trial."""
    import keras
    import keras_tuner
    import numpy as np
    import optuna
    import sklearn
    import tensorflow as tf

    from tuning.device import detect

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


def check_protocol(
    stored: Mapping[str, Any] | None,
    expected: Mapping[str, Any],
    *,
    study: str,
    remedy: str,
    ignore: Collection[str] = (),
) -> None:
    """The one check, for study, export and transfer alike, that a stored study was made the way
    this run would make it: first its protocol version (when `expected` names one), then every
    other key of `expected` except those in `ignore`.

    Raises:
        StudyMismatchError: one line naming `study`, the first key that differs, the stored and
            the expected values, and `remedy` (what to do).
    """
    stored = stored or {}
    if "protocol_version" in expected:
        version = stored.get("protocol_version", 1)
        if version != expected["protocol_version"]:
            raise StudyMismatchError(
                f"{study} was stored by an earlier tuning (protocol {version}: one fidelity, "
                f"untuned training recipe), so its scores mean something else now; {remedy}"
            )
    for key, want in expected.items():
        have = stored.get(key)
        if key not in ignore and have != want:
            raise StudyMismatchError(
                f"{study} was made with {key}={have}, but this run has {key}={want}; {remedy}"
            )


def space_fingerprint(description: list[dict[str, Any]]) -> str:
    """A short hash of a space description; a stored study resumes only if it matches."""
    canonical = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
