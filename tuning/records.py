"""What studies and trials store, by name: the Optuna user attributes `tuning` writes and reads,
the record of each export kept on its study, and the library versions recorded beside every
result. (What a stored score means, its protocol, is `tuning.protocol`.)

Every writer and every reader uses these names, so a record means the same in the study, the
progress bar, the dashboard note, export and transfer.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tuning.typed_json import OMIT_NONE, from_json, to_json


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


@dataclass(frozen=True)
class ExportRecord:
    """What an export of one trial scored on the test set, kept on the study (`StudyKey.EXPORTS`)
    so that later exports set their winner beside the baseline without training it again."""

    trial: int
    test_accuracy: float | None  # None: the data has no test split
    test_errors: int | None
    test_images: int
    epoch_scale: float
    data_sha256: str
    out: str
    created: str
    seeds: int = 1  # members of the shipped model (more than 1: an ensemble)
    member_errors: list[int] | None = field(default=None, metadata=OMIT_NONE)
    versus: str | None = field(default=None, metadata=OMIT_NONE)  # paired, against the baseline
    tuning_gain: str | None = field(default=None, metadata=OMIT_NONE)  # seeds against seeds

    def to_attr(self) -> dict[str, Any]:
        return dict(to_json(self))

    @classmethod
    def from_attr(cls, value: dict[str, Any]) -> ExportRecord:
        return from_json(cls, value)


def library_versions() -> dict[str, str]:
    """Versions, and the device, that decide what a trial computes; recorded on every trial."""
    import keras
    import keras_tuner
    import numpy as np
    import optuna
    import sklearn

    from tuning import backend
    from tuning.device import detect

    return {
        "python": platform.python_version(),
        "backend": backend.name(),
        **backend.versions(),
        "keras": keras.__version__,
        "keras_tuner": keras_tuner.__version__,
        "optuna": optuna.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "device": detect().describe(),
    }


def space_fingerprint(description: list[dict[str, Any]]) -> str:
    """A short hash of a space description; a stored study resumes only if it matches."""
    canonical = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
