from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tuning.errors import ModelError
from tuning.model.card import CARD_FILE, CARD_VERSION, ModelCard


def a_card(**changes: Any) -> ModelCard:
    fields: dict[str, Any] = {
        "kind": "export",
        "study": "mnist_cnn",
        "trial": 7,
        "params": {"filters_0": 32},
        "class_names": [str(d) for d in range(10)],
        "cv": {"mean": 0.99},
        "sha256": {"model": "ab" * 32, "data": "cd" * 32},
        "versions": {"keras": "3"},
        "created": "2026-11-26T04:00:00+00:00",
        "sections": {"test": {"accuracy": 0.995, "errors": 50}},
    }
    return ModelCard(**{**fields, **changes})


def test_a_written_card_reads_back_the_same(tmp_path: Path) -> None:
    card = a_card()
    path = card.write(tmp_path)
    assert path == tmp_path / CARD_FILE
    assert ModelCard.read(tmp_path / "model.keras") == card
    data = json.loads(path.read_text())
    # Sections are top-level keys, as readers of the JSON (and older cards) expect.
    assert data["test"] == {"accuracy": 0.995, "errors": 50} and "sections" not in data
    assert data["card_version"] == CARD_VERSION and data["kind"] == "export"
    assert card.model_sha256 == "ab" * 32


def test_cards_written_before_the_dataclass_still_read(tmp_path: Path) -> None:
    old_export = {"card_version": 2, "study": "s", "trial": 3, "params": {}, "test": {"errors": 41}}
    (tmp_path / CARD_FILE).write_text(json.dumps(old_export))
    card = ModelCard.read(tmp_path / "model.keras")
    assert card is not None and card.kind == "export" and card.card_version == 2
    assert card.sections == {"test": {"errors": 41}} and card.class_names is None
    assert ModelCard.read(tmp_path / "elsewhere" / "model.keras") is None  # no card there


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"class_names": "abc"}, "'class_names' must be a list of class names"),
        ({"class_names": ["a", 2]}, "'class_names' must be a list of strings"),
        ({"trial": "7"}, "'trial' must be a trial number. Received: '7'"),
        ({"trial": True}, "'trial' must be a trial number. Received: True"),
        ({"sha256": "ab"}, "'sha256' must be {'model': HEX, ...}"),
        ({"kind": "other"}, "'kind' must be one of export, transfer. Received: 'other'"),
    ],
)
def test_a_bad_card_is_one_line_naming_the_file_and_field(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    (tmp_path / CARD_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelError) as info:
        ModelCard.read(tmp_path / "model.keras")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / CARD_FILE}: ") and "\n" not in message
    assert expected in message


def test_sections_cannot_shadow_a_card_field() -> None:
    with pytest.raises(ValueError, match="sections must not repeat a card field"):
        a_card(sections={"class_names": ["x"]})
