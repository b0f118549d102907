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
    PARAM_COUNT = "param_count"  # the network's cost in parameters, counted before training
    FLOPS = "flops"  # forward FLOPs per image; absent when some layer's count is unknown
    FLOPS_UNKNOWN = "flops_unknown"  # the layers without a FLOP count, when there are any
    LATENCY_MS = "latency_ms"  # CPU inference milliseconds per image at batch 1 (a median)
    LATENCY_B256_MS = "latency_b256_ms"  # the same per image at batch 256
    LATENCY_THREADS = "latency_threads"  # the CPU threads both were measured on
    INFEASIBLE = "infeasible"  # the [objective] limits the network broke, in one line
    TRAIN_SECONDS = "train_seconds"
    TRIAL_SECONDS = "trial_seconds"
    FAIL_REASON = "fail_reason"  # why a FAILED trial failed, in one line
    VERSIONS = "versions"  # `library_versions()` of the process that ran it
    BASELINE = "baseline"  # the seed network (or default transfer): never pruned, the yardstick
    ENQUEUED_FROM = "enqueued_from"  # a [[study.enqueue]] starting point: the study file
    FOLD_HISTORIES = "fold_histories"  # per-epoch curves, before they became artifacts


# What a study file may limit or minimise (`[objective]`); latency_ms: batch-1 ms per image.
COST_NAMES = ("params", "flops", "latency_ms")


@dataclass(frozen=True)
class Latency:
    """Inference time per image in milliseconds, at batch 1 and at batch 256 (the call's time /
    256): medians of `repeats` and `batch256_repeats` timed calls after a warm-up, their
    interquartile ranges, on `threads` CPU threads (`tuning.model.cost.measure_latency`)."""

    batch1_ms: float
    batch256_ms: float
    threads: int
    repeats: int
    batch256_repeats: int
    batch1_iqr_ms: float
    batch256_iqr_ms: float


@dataclass(frozen=True)
class ModelCost:
    """What a built model costs: its parameters, forward FLOPs per image (None: some layers'
    cost is unknown, named in `unknown_layers`) and, if measured, its latency. Counted by
    `tuning.model.cost.model_cost`."""

    params: int
    flops: int | None
    unknown_layers: tuple[str, ...] = ()
    latency: Latency | None = field(default=None, metadata=OMIT_NONE)

    def value(self, name: str) -> float | None:
        """The cost called `name` (one of `COST_NAMES`); None where it is unknown.

        Raises:
            ValueError: `name` is not a cost name.
        """
        if name == "params":
            return float(self.params)
        if name == "flops":
            return None if self.flops is None else float(self.flops)
        if name == "latency_ms":
            return None if self.latency is None else self.latency.batch1_ms
        raise ValueError(
            f"unknown cost name; expected one of: {', '.join(COST_NAMES)}. Received: {name!r}"
        )

    def describe(self) -> str:
        """One line: '370,454 params, 22.9 MFLOP, 1.2 ms/img at batch 1'."""
        flops = (
            format_flops(self.flops)
            if self.flops is not None
            else f"FLOPs unknown ({', '.join(self.unknown_layers)})"
        )
        parts = [f"{self.params:,} params", flops]
        if self.latency is not None:
            parts.append(f"{format_ms(self.latency.batch1_ms)} ms/img at batch 1")
        return ", ".join(parts)


def format_flops(flops: float) -> str:
    """'22.8 MFLOP', '3.4 kFLOP', '1.2 GFLOP', '950 FLOP'."""
    for scale, unit in ((1e9, "GFLOP"), (1e6, "MFLOP"), (1e3, "kFLOP")):
        if flops >= scale:
            return f"{flops / scale:.1f} {unit}"
    return f"{flops:.0f} FLOP"


def format_ms(ms: float) -> str:
    """Milliseconds to two significant digits, never in exponent form: '0.35', '1.2', '56'."""
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.2g}"


@dataclass(frozen=True)
class FormatCheck:
    """One deployment format written by an export, checked against the Keras model on the test
    images: its file, its latency, the largest absolute difference of probabilities and its own
    test errors (None: not checked, e.g. no test split)."""

    format: str
    file: str
    latency: Latency
    max_abs_diff: float | None
    test_errors: int | None


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
    cost: ModelCost | None = field(default=None, metadata=OMIT_NONE)  # of the shipped model
    formats: list[FormatCheck] | None = field(default=None, metadata=OMIT_NONE)  # its files

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
