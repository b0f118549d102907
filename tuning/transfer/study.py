"""The transfer study: its name, the protocol its scores depend on, and creating or resuming it
in the same storage as the MNIST study."""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna

from tuning import backend
from tuning.images.folder import ImageFolder
from tuning.protocol import check_fields
from tuning.records import StudyKey, space_fingerprint
from tuning.storage import open_storage, redact
from tuning.transfer import model as transfer
from tuning.transfer.search import Search
from tuning.typed_json import OMIT_NONE, to_json

OBJECTIVE = "held-out log loss (minimize)"
# Generic split names say nothing about a dataset; its parent folder ("greek") does.
_SPLIT_NAMES = {"train", "training", "data", "images"}
# What the dashboard's charts call the objective (instead of "Objective 0").
METRIC_NAME = "CV log loss"


@dataclass(frozen=True)
class TransferProtocol:
    """What a transfer study's scores depend on; a study resumes only with the same one."""

    classes: list[str]
    base_model_sha256: str
    data_sha256: str
    space_fingerprint: str
    inner_folds: int
    seed: int
    objective: str = OBJECTIVE
    backend: str = "tensorflow"  # the Keras backend; studies stored before the key used this
    base_members: str | None = field(default=None, metadata=OMIT_NONE)  # of an ensemble base

    def to_attr(self) -> dict[str, object]:
        return dict(to_json(self))


def transfer_protocol(
    base: transfer.BaseModel, images: ImageFolder, search: Search, seed: int
) -> TransferProtocol:
    """The protocol of transferring `base` to `images` with `search`, seeded by `seed`."""
    return TransferProtocol(
        classes=images.class_names,
        base_model_sha256=base.sha256,
        data_sha256=images.sha256,
        space_fingerprint=space_fingerprint(search.space),
        inner_folds=search.inner_folds,
        seed=seed,
        backend=backend.name(),
        base_members=base.members,
    )


def study_name_for(base: transfer.BaseModel, data: ImageFolder) -> str:
    """`<base study>-<dataset>-<classes>`, e.g. `mnist_cnn-greek-alpha-beta-gamma` (from an
    ensemble, with `-best-member` or `-all-members` after it)."""
    root = data.root.resolve()
    dataset = root.parent.name if root.name.lower() in _SPLIT_NAMES else root.name
    name = f"{base.study or base.path.parent.name}-{dataset}-{'-'.join(data.class_names)}"
    return (
        f"{name}-{base.members}-member{'s' if base.members == 'all' else ''}"
        if base.members
        else name
    )


def open_transfer_study(
    url: str, name: str, protocol: TransferProtocol
) -> tuple[optuna.Study, bool]:
    """Create the study, or resume it if it was made with the same protocol.

    Raises:
        StudyMismatchError: a study of that name exists with another base model, data or space.
    """
    storage = open_storage(url)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize")
        study.set_user_attr(StudyKey.PROTOCOL, protocol.to_attr())
        study.set_metric_names([METRIC_NAME])
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name)
    if study.metric_names is None:  # stored before the objective was named
        study.set_metric_names([METRIC_NAME])
    stored = study.user_attrs.get(StudyKey.PROTOCOL)
    if stored is None and not study.trials:
        # A run stopped between creating the study and recording its protocol.
        study.set_user_attr(StudyKey.PROTOCOL, protocol.to_attr())
        return study, True
    check_fields(
        {"backend": "tensorflow", **(stored or {})},  # stored before the key existed
        protocol.to_attr(),
        study=f"transfer study '{name}' in {redact(url)}",
        remedy="give the transfer study a new name (or use another storage) to start afresh",
    )
    return study, False
