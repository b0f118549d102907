"""The model card, `model_card.json` beside every published `model.keras`: what the network is,
what its outputs mean and how it was made. `ModelCard` is the only way a card is written (export,
transfer) or read (transfer's base check, predict's class names)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuning.errors import ModelError
from tuning.publish import write_json

CARD_FILE = "model_card.json"
CARD_VERSION = 3  # 3: written by ModelCard, with `kind` (2: export cards, 1: transfer cards)
KINDS = ("export", "transfer")
# How a picture becomes the network's input (`tuning.images.preprocess.prepare_image` does it).
INPUT_CONVENTION: dict[str, Any] = {
    "shape": [28, 28, 1],
    "range": "0..255",
    "ink": "light on dark",
    "preprocess": "tuning.images.preprocess.prepare_image",
}
_CORE = ("card_version", "kind", "study", "trial", "params", "class_names", "cv", "sha256")
_TAIL = ("input", "versions", "created")


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """A published model's card. `sections` holds what only one kind has (an export's `test`,
    `baseline` and `training`; a transfer's `base` and `details`), written as top-level keys.
    Every field may be missing from a card someone wrote by hand; `tuning` writes them all."""

    kind: str = "export"
    study: str | None = None
    trial: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None  # None: the outputs are the digits 0-9
    cv: dict[str, Any] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)  # "model": the hex sha256 of model.keras
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    sections: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] = field(default_factory=lambda: dict(INPUT_CONVENTION))
    card_version: int = CARD_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}. Received: {self.kind!r}")
        clash = sorted(set(self.sections) & {*_CORE, *_TAIL})
        if clash:
            raise ValueError(f"sections must not repeat a card field. Received: {clash[0]!r}")

    @property
    def model_sha256(self) -> str | None:
        value = self.sha256.get("model")
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-ready data: its fields, then its sections, then input and versions."""
        head = {name: getattr(self, name) for name in _CORE}
        return {**head, **self.sections, **{name: getattr(self, name) for name in _TAIL}}

    def write(self, folder: Path) -> Path:
        """Write `folder/model_card.json`; returns its path."""
        return write_json(folder / CARD_FILE, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: Path) -> ModelCard:
        """A card from its JSON data; cards of versions 1 and 2 read too.

        Raises:
            ModelError: a field is missing or of the wrong type, naming `source` and the field.
        """

        def check(name: str, kind: type, expected: str) -> Any:
            value = data.get(name)
            if value is not None and (
                not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
            ):
                raise ModelError(f"{source}: '{name}' must be {expected}. Received: {value!r:.80}")
            return value

        names = check("class_names", list, "a list of class names (one per model output)")
        if names is not None and not all(isinstance(n, str) for n in names):
            raise ModelError(
                f"{source}: 'class_names' must be a list of strings (one per model output). "
                f"Received: {names!r:.80}"
            )
        kind = data.get("kind", "export")  # version 2 cards were all exports
        if kind not in KINDS:
            raise ModelError(
                f"{source}: 'kind' must be one of {', '.join(KINDS)}. Received: {kind!r:.40}"
            )
        return cls(
            kind=kind,
            study=check("study", str, "the study's name"),
            trial=check("trial", int, "a trial number"),
            params=dict(check("params", dict, "the trial's hyperparameters") or {}),
            class_names=None if names is None else list(names),
            cv=dict(check("cv", dict, "a table of CV figures") or {}),
            sha256=dict(check("sha256", dict, "{'model': HEX, ...}") or {}),
            versions=dict(check("versions", dict, "a table of versions") or {}),
            created=str(data.get("created", "")),
            sections={k: v for k, v in data.items() if k not in (*_CORE, *_TAIL)},
            input=dict(check("input", dict, "a table") or INPUT_CONVENTION),
            card_version=int(check("card_version", int, "an integer") or 1),
        )

    @classmethod
    def read(cls, model_path: str | Path) -> ModelCard | None:
        """The card beside a model file, or None if there is none.

        Raises:
            ModelError: the card exists but is not a readable JSON object with the card fields.
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
        return cls.from_dict(data, source=path)
