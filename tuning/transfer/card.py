"""What a transfer records: `TransferDetails`, the full card (`transfer_card.json`) with the base
network, the data, the protocol and the nested-CV result, and the `TransferCard` that
`tuning predict` reads (`model_card.json`), made from it. Every section is a typed record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sklearn import metrics

from tuning import backend
from tuning.images.folder import ImageFolder
from tuning.model.card import BaseRecord, ExportCard, HeldOutScore, TransferCard
from tuning.training.cv import FoldResult, Interval, NestedResult
from tuning.transfer.model import BaseModel, log_loss

DETAILS_FILE = "transfer_card.json"


@dataclass(frozen=True)
class DataRecord:
    """The image folder a transfer learned: its classes, their sizes, the files' sha256 and the
    files it skipped (and why)."""

    root: str
    classes: list[str]
    counts: dict[str, int]
    sha256: str
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NestedProtocol:
    """How the transfer's accuracy is scored, in a paragraph (`summary`) and by its numbers."""

    summary: str
    kind: str
    outer_folds: int
    inner_folds: int
    trials: int
    objective: str
    interval: str
    seed: int


@dataclass(frozen=True)
class Confusion:
    """Held-out predictions counted by true class (rows) and predicted class (columns)."""

    classes: list[str]
    counts: list[list[int]]


@dataclass(frozen=True)
class HeldOutPrediction:
    """One image's held-out prediction."""

    image: str
    true: str
    predicted: str


@dataclass(frozen=True)
class NestedCV:
    """The nested-CV result: pooled held-out accuracy with its interval, per class and per outer
    fold, the held-out log loss, and every image's prediction."""

    accuracy: float
    correct: int
    images: int
    interval: Interval
    confusion: Confusion
    per_class_accuracy: dict[str, float]
    outer_folds: list[FoldResult]
    log_loss: float
    predictions: list[HeldOutPrediction]

    @classmethod
    def of(cls, nested: NestedResult, data: ImageFolder) -> NestedCV:
        names, y = data.class_names, data.y
        y_pred = nested.probs.argmax(axis=1)
        correct = nested.correct(y)
        counts = metrics.confusion_matrix(y, y_pred, labels=range(len(names)))
        return cls(
            accuracy=correct / len(y),
            correct=correct,
            images=len(y),
            interval=Interval.wilson(correct, len(y)),
            confusion=Confusion(names, counts.tolist()),
            per_class_accuracy={
                n: float(counts[i, i] / max(1, counts[i].sum())) for i, n in enumerate(names)
            },
            outer_folds=nested.folds,
            log_loss=log_loss(y, nested.probs),
            predictions=[
                HeldOutPrediction(str(p), names[t], names[q])
                for p, t, q in zip(data.paths, y, y_pred, strict=True)
            ],
        )


@dataclass(frozen=True)
class TuningSummary:
    """The transfer study's best trial, whose configuration the final model uses. Its score is
    optimistic: the configuration was chosen on those same folds."""

    best_trial: int
    best_cv_log_loss: float
    best_cv_accuracy: float | None
    note: str
    trials: int


@dataclass(frozen=True)
class TransferTraining:
    """How the final model was trained: on every image, in `seconds`, on `device`."""

    images: int
    seconds: float
    fine_tune_rate_factor: float
    batch_size: int
    device: str


@dataclass(frozen=True, kw_only=True)
class TransferDetails:
    """The full transfer card. Before the result is known (the dashboard note of a running
    transfer) only the first five sections are set."""

    card_version: int = 1
    study: str
    storage: str
    base: BaseRecord
    data: DataRecord
    protocol: NestedProtocol
    class_names: list[str] | None = None
    params: dict[str, Any] | None = None
    cv: NestedCV | None = None
    tuning: TuningSummary | None = None
    training: TransferTraining | None = None
    sha256: dict[str, str] | None = None
    versions: dict[str, str] | None = None
    created: str | None = None
    seconds: float | None = None

    def with_result(self, **sections: Any) -> TransferDetails:
        """The card with its result sections (`class_names`, `params`, `cv`, ...) filled in."""
        return dataclasses.replace(self, **sections)

    def model_card(self) -> TransferCard:
        """The card `tuning predict` reads (class names), with this card's file as `details`.

        Raises:
            ValueError: the result is not known yet.
        """
        if self.cv is None or self.tuning is None:
            raise ValueError("a transfer's model card needs its result (cv and tuning)")
        return TransferCard(
            study=self.study,
            trial=self.tuning.best_trial,
            params=dict(self.params or {}),
            class_names=self.class_names,
            cv=HeldOutScore(self.cv.accuracy, self.cv.interval, self.protocol.summary),
            sha256=dict(self.sha256 or {}),
            backend=backend.name(),
            versions=dict(self.versions or {}),
            created=self.created or "",
            base=self.base,
            details=DETAILS_FILE,
        )


def base_record(base: BaseModel) -> BaseRecord:
    """The card's record of the exported network a transfer starts from."""
    test = base.card.test if isinstance(base.card, ExportCard) else None
    return BaseRecord(
        path=str(base.path),
        sha256=base.sha256,
        study=base.study,
        trial=base.trial,
        test_accuracy=test.accuracy if test is not None else None,
        froze=base.froze,
    )


def data_record(data: ImageFolder) -> DataRecord:
    """The card's record of the image folder."""
    return DataRecord(
        root=str(data.root),
        classes=data.class_names,
        counts=data.counts(),
        sha256=data.sha256,
        skipped=[str(s) for s in data.skipped],
    )
