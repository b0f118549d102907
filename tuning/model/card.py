"""The model card, `model_card.json` beside every published `model.keras`: what the network is,
what its outputs mean, how it was made and how well it did. An export writes an `ExportCard`, a
transfer a `TransferCard`, both built from the small typed records below; `ModelCard.read`
reads either, and every card written since card version 1. Nothing else reads a card's JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuning.errors import ModelError
from tuning.images.dataset import InputConvention
from tuning.model.compare import MeanDifference, PairedComparison
from tuning.model.tradeoff import CostSection
from tuning.model.tradeoff import TrainingCost as TrainingCost  # where it was read before
from tuning.protocol import PROTOCOL_VERSION, Protocol
from tuning.records import ExportRecord
from tuning.training.cv import Interval
from tuning.training.recipe import Recipe
from tuning.typed_json import OMIT_NONE, RecordError, from_json, to_json, write_json

CARD_FILE = "model_card.json"
# 7: cost as a section (training, the model's params, FLOPs and latency per format, the
# baseline's, the verdict); 6: cost (estimated beside measured); 5: backend and formats;
# 4: members, ensemble, paired comparison; 3: typed cards with `kind`
CARD_VERSION = 7
KINDS = ("export", "transfer")
# The JSON's first and last keys; a kind's own sections stand between them.
_HEAD = ("card_version", "kind", "study", "trial", "params", "class_names", "cv", "sha256")
_TAIL = ("input", "versions", "created")


@dataclass(frozen=True)
class TestScore:
    """The one evaluation of an export on its data's test split."""

    __test__ = False  # not a pytest test class, whatever its name

    accuracy: float
    loss: float
    errors: int
    images: int


@dataclass(frozen=True, kw_only=True)
class BaselineComparison(ExportRecord):
    """The baseline's stored export beside this model: `errors_saved` is the baseline's test
    errors minus this model's (negative: this model makes more). `paired` sets this model
    against one baseline network (its first seed) on the same test images; `seeds` sets this
    export's members against the baseline's, seed for seed: did tuning help?"""

    errors_saved: int
    paired: PairedComparison | None = field(default=None, metadata=OMIT_NONE)
    seeds_compared: MeanDifference | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class MemberScore:
    """One network of the shipped model: its trial, seed, test errors and training seconds."""

    trial: int
    seed: int
    errors: int | None
    seconds: float


@dataclass(frozen=True)
class EnsembleSummary:
    """The members behind the shipped model (`members`: "seeds" of one trial or the "top"
    trials), their test errors, and `curve`: the errors of the mean of the first k members for
    k = 1, 2, ... (the last is the shipped model's)."""

    members: str
    scores: list[MemberScore]
    mean_errors: float | None
    std_errors: float | None
    curve: list[int]


@dataclass(frozen=True)
class CVSummary:
    """The exported trial's cross-validation score at the highest rung it reached, under the
    study's `protocol`."""

    rung: int
    mean: float
    std: float | None = None
    folds: list[float] | None = None
    rung_scores: dict[str, float] = field(default_factory=dict)
    protocol: Protocol | None = None
    train_seconds: float | None = None


@dataclass(frozen=True)
class TrainingRecord:
    """How the exported model was trained: `recipe` is the trial's own (None: the HyperModel's
    own fit chose how), on `images` training images, seeded by `seed`, on `device`. The final
    loss and accuracy are its first member's; `seconds` is all its members' training."""

    images: int
    recipe: Recipe | None
    epoch_scale: float
    seed: int
    final_loss: float
    final_accuracy: float
    seconds: float
    device: str


@dataclass(frozen=True)
class HeldOutScore:
    """A transfer's accuracy on images held out by nested CV, its interval and its protocol."""

    accuracy: float
    interval: Interval
    protocol: str


@dataclass(frozen=True)
class BaseRecord:
    """The exported model a transfer froze: its file, sha256, study, trial and test accuracy,
    and, from an ensemble, which of its members (`froze`, in words)."""

    path: str
    sha256: str
    study: str | None = None
    trial: int | None = None
    test_accuracy: float | None = None
    froze: str | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """What every card says: which trial of which study made the network, what its outputs are
    (`class_names`; None: the digits 0-9), how a picture becomes its input, and provenance.
    Every field may be missing from a card someone wrote by hand; `tuning` writes them all."""

    card_version: int = CARD_VERSION
    kind: str = "export"
    study: str | None = None
    trial: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    sha256: dict[str, str] = field(default_factory=dict)  # "model": the hex sha256 of model.keras
    backend: str = "tensorflow"  # the Keras backend that trained it
    formats: list[str] = field(default_factory=lambda: ["keras"])  # "keras", "saved_model"
    input: InputConvention = field(default_factory=InputConvention)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}. Received: {self.kind!r}")

    @property
    def model_sha256(self) -> str | None:
        return self.sha256.get("model")

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON data: the common fields, then the kind's sections, then input,
        versions and created."""
        data = dict(to_json(self))
        head = {name: data.pop(name) for name in _HEAD if name in data}
        tail = {name: data.pop(name) for name in _TAIL}
        return {**head, **data, **tail}

    def write(self, folder: Path) -> Path:
        """Write `folder/model_card.json`; returns its path."""
        return write_json(folder / CARD_FILE, self.to_dict())

    @staticmethod
    def from_dict(data: dict[str, Any], *, source: Path) -> ExportCard | TransferCard:
        """The card of `data` (its `kind`: an export's or a transfer's).

        Raises:
            ModelError: a field is of the wrong type, naming `source` and the field.
        """
        data = _upgrade(data)
        kind = data.get("kind")
        if kind not in KINDS:
            raise ModelError(
                f"{source}: 'kind' must be one of {', '.join(KINDS)}. Received: {kind!r:.40}"
            )
        try:
            if kind == "transfer":
                return from_json(TransferCard, data)
            return from_json(ExportCard, data)
        except RecordError as exc:
            raise ModelError(f"{source}: {exc}") from None

    @staticmethod
    def read(model_path: str | Path) -> ExportCard | TransferCard | None:
        """The card beside a model file, or None if there is none.

        Raises:
            ModelError: the card exists but is not a readable JSON object of a card.
        """
        path = Path(model_path).with_name(CARD_FILE)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: not a readable JSON model card ({exc})") from None
        if not isinstance(data, dict):
            raise ModelError(f"{path}: a model card must be a JSON object. Received: {data!r:.60}")
        return ModelCard.from_dict(data, source=path)


@dataclass(frozen=True, kw_only=True)
class ExportCard(ModelCard):
    """The card of `tuning export`: the trial's CV score, the one test score, the baseline beside
    it, how the model was trained, and where everything went."""

    kind: str = "export"
    cv: CVSummary | None = None
    study_file: str | None = None
    storage: str | None = None
    seed_network: bool = False
    test: TestScore | None = None  # None: the data has no test split
    baseline: BaselineComparison | None = None
    ensemble: EnsembleSummary | None = field(default=None, metadata=OMIT_NONE)
    training: TrainingRecord | None = None
    cost: CostSection | None = field(default=None, metadata=OMIT_NONE)
    param_count: int | None = None
    data: str | None = None
    files: list[str] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> id, before the card's


@dataclass(frozen=True, kw_only=True)
class TransferCard(ModelCard):
    """The card of `tuning transfer` that `tuning predict` reads; `details` names the full
    transfer card beside it (`tuning.transfer.report.TransferDetails`)."""

    kind: str = "transfer"
    cv: HeldOutScore | None = None
    base: BaseRecord | None = None
    details: str | None = None


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Cards of earlier versions in today's form: version 2 cards were all exports and named a
    HyperModel's own fit by a sentence; a protocol of another version is not today's record;
    before version 5 every model was trained under TensorFlow, and its files say whether a
    SavedModel was written; before version 7 `cost` was the training's alone."""
    data = {"kind": "export", "card_version": 1, **data}
    version, files = data["card_version"], data.get("files")
    if (
        isinstance(version, int)
        and version < 5
        and "formats" not in data
        and isinstance(files, list)
    ):
        data["formats"] = ["keras"] + (["saved_model"] if "saved_model" in files else [])
    if isinstance(version, int) and version < 7 and isinstance(data.get("cost"), dict):
        data["cost"] = {"training": data["cost"]}
    training = data.get("training")
    if isinstance(training, dict) and isinstance(training.get("recipe"), str):
        data["training"] = {**training, "recipe": None}
    cv = data.get("cv")
    if (
        isinstance(cv, dict)
        and isinstance(cv.get("protocol"), dict)
        and cv["protocol"].get("protocol_version") != PROTOCOL_VERSION
    ):
        data["cv"] = {**cv, "protocol": None}
    return data
