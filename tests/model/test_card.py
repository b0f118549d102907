from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tuning.errors import ModelError
from tuning.model.card import (
    CARD_FILE,
    CARD_VERSION,
    CVSummary,
    ExportCard,
    ModelCard,
    TestScore,
    TrainingRecord,
    TransferCard,
)
from tuning.model.tradeoff import CostSection, TrainingCost
from tuning.training.recipe import Recipe

# A card as `tuning export` wrote it before cards were typed (card version 2: no `kind`, the
# protocol and the sections as plain JSON), from a HyperModel with its own fit.
VERSION_2_EXPORT: dict[str, Any] = {
    "card_version": 2,
    "study": "mnist_cnn",
    "study_file": "studies/mnist_cnn.toml",
    "trial": 0,
    "seed_network": True,
    "params": {"filters_0": 32},
    "cv": {
        "rung": 2,
        "mean": 0.9939,
        "std": 0.0,
        "folds": [0.9939],
        "rung_scores": {"0": 0.979, "1": 0.9806, "2": 0.9939},
        "protocol": {"subset": 10000, "folds": 3, "max_epochs": 10, "seed": 42},  # protocol 1
        "train_seconds": 701.0,
    },
    "test": {"accuracy": 0.9965, "loss": 0.011, "errors": 35, "images": 10000},
    "baseline": None,
    "training": {
        "images": 60000,
        "recipe": "the HyperModel's fit",
        "epoch_scale": 1.0,
        "seed": 42,
        "final_loss": 0.02,
        "final_accuracy": 0.99,
        "seconds": 1205.0,
        "device": "CPU: AMD EPYC (2 cores)",
    },
    "param_count": 370000,
    "sha256": {"model": "ab" * 32, "data": "cd" * 32},
    "data": "mnist.npz",
    "class_names": [str(d) for d in range(10)],
    "input": {
        "shape": [28, 28, 1],
        "range": "0..255",
        "ink": "light on dark",
        "preprocess": "tuning.preprocess.prepare_image",
    },
    "versions": {"keras": "3.15.1"},
    "created": "2026-11-25T12:00:00+00:00",
    "files": ["model.keras"],
    "artifacts": {"model.keras": "id-1"},
}
# The transfer card `tuning predict` read before cards were typed (card version 1).
VERSION_1_TRANSFER: dict[str, Any] = {
    "card_version": 1,
    "kind": "transfer",
    "study": "mnist_cnn-greek-alpha-beta-gamma",
    "trial": 4,
    "params": {"learning_rate": 0.01, "epochs": 20, "augment": 0.5, "unfreeze": 0},
    "class_names": ["alpha", "beta", "gamma"],
    "cv": {
        "accuracy": 1.0,
        "interval": {"method": "wilson", "level": 0.95, "low": 0.875, "high": 1.0},
        "protocol": "Nested cross-validation ...",
    },
    "base": {"path": "m/model.keras", "sha256": "ef" * 32, "study": "mnist_cnn", "trial": 0,
             "test_accuracy": 0.9965},
    "sha256": {"model": "12" * 32},
    "input": {"shape": [28, 28, 1], "range": "0..255", "ink": "light on dark",
              "preprocess": "tuning.preprocess.prepare_image"},
    "versions": {"keras": "3.15.1"},
    "created": "2026-11-25T13:00:00+00:00",
    "details": "transfer_card.json",
}  # fmt: skip


def an_export_card(**changes: Any) -> ExportCard:
    fields: dict[str, Any] = {
        "study": "mnist_cnn",
        "trial": 7,
        "params": {"filters_0": 32},
        "class_names": [str(d) for d in range(10)],
        "cv": CVSummary(rung=0, mean=0.99, rung_scores={"0": 0.99}),
        "sha256": {"model": "ab" * 32, "data": "cd" * 32},
        "versions": {"keras": "3"},
        "created": "2026-11-26T04:00:00+00:00",
        "test": TestScore(accuracy=0.995, loss=0.02, errors=50, images=10000),
        "training": TrainingRecord(
            images=60000,
            recipe=Recipe(epochs=3),
            epoch_scale=1.0,
            seed=42,
            final_loss=0.1,
            final_accuracy=0.97,
            seconds=12.5,
            device="CPU",
        ),
    }
    return ExportCard(**{**fields, **changes})


def write_card(folder: Path, data: dict[str, Any]) -> Path:
    (folder / CARD_FILE).write_text(json.dumps(data))
    return folder / "model.keras"


def test_a_written_card_reads_back_the_same_typed_card(tmp_path: Path) -> None:
    card = an_export_card()
    path = card.write(tmp_path)
    assert path == tmp_path / CARD_FILE
    read = ModelCard.read(tmp_path / "model.keras")
    assert read == card and isinstance(read, ExportCard)
    assert isinstance(read.training, TrainingRecord) and read.training.recipe == Recipe(epochs=3)
    data = json.loads(path.read_text())
    # Sections are top-level keys between the common head and tail, as readers of the JSON expect.
    keys = list(data)
    assert keys[:8] == ["card_version", "kind", "study", "trial", "params", "class_names", "cv",
                        "sha256"]  # fmt: skip
    assert keys[-3:] == ["input", "versions", "created"] and "test" in keys
    assert data["test"] == {"accuracy": 0.995, "loss": 0.02, "errors": 50, "images": 10000}
    assert data["card_version"] == CARD_VERSION and data["kind"] == "export"
    assert card.model_sha256 == "ab" * 32


def test_cards_written_before_the_typed_records_still_read(tmp_path: Path) -> None:
    card = ModelCard.read(write_card(tmp_path, VERSION_2_EXPORT))
    assert isinstance(card, ExportCard) and card.card_version == 2
    assert card.test == TestScore(0.9965, 0.011, 35, 10000)
    assert card.training is not None and card.training.recipe is None  # its own fit
    assert card.cv is not None and card.cv.protocol is None  # protocol 1 is not today's record
    assert card.class_names == [str(d) for d in range(10)] and not card.input.resizes
    # Before version 5 every model was TensorFlow's; its files say whether a SavedModel is there.
    assert card.backend == "tensorflow" and card.formats == ["keras"]
    saved = {**VERSION_2_EXPORT, "files": ["model.keras", "saved_model"]}
    assert ModelCard.read(write_card(tmp_path, saved)).formats == ["keras", "saved_model"]  # type: ignore[union-attr]

    card = ModelCard.read(write_card(tmp_path, VERSION_1_TRANSFER))
    assert card is not None and card.backend == "tensorflow" and card.formats == ["keras"]
    assert isinstance(card, TransferCard) and card.class_names == ["alpha", "beta", "gamma"]
    assert card.cv is not None and card.cv.interval.low == 0.875
    assert card.base is not None and card.base.test_accuracy == 0.9965
    assert ModelCard.read(tmp_path / "elsewhere" / "model.keras") is None  # no card there


def test_a_version_6_card_keeps_its_training_cost_in_the_cost_section(tmp_path: Path) -> None:
    training = {"networks": 4, "estimated_seconds": 900.0, "seconds": 870.5, "measured_by": "m"}
    card = ModelCard.read(write_card(tmp_path, {"card_version": 6, "cost": training}))
    assert isinstance(card, ExportCard) and card.card_version == 6
    assert card.cost == CostSection(training=TrainingCost(4, 900.0, 870.5, "m"))
    assert card.cost.model is None and card.cost.verdict is None  # not measured back then
    written = card.to_dict()
    assert written["cost"] == {"training": training, "formats": []}


def test_a_hand_written_card_with_only_class_names_reads(tmp_path: Path) -> None:
    card = ModelCard.read(write_card(tmp_path, {"class_names": ["cat", "dog"]}))
    assert isinstance(card, ExportCard) and card.class_names == ["cat", "dog"]
    assert card.test is None and card.model_sha256 is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"class_names": "abc"}, "'class_names' must be a list of strings. Received: 'abc'"),
        ({"class_names": ["a", 2]}, "'class_names[1]' must be a string. Received: 2"),
        ({"trial": "7"}, "'trial' must be an integer. Received: '7'"),
        ({"card_version": "4", "files": []}, "'card_version' must be an integer. Received: '4'"),
        ({"trial": True}, "'trial' must be an integer. Received: True"),
        ({"sha256": "ab"}, "'sha256' must be a table (a JSON object). Received: 'ab'"),
        ({"kind": "other"}, "'kind' must be one of export, transfer. Received: 'other'"),
        ({"test": {"accuracy": 1.0, "loss": 0.0, "errors": "7", "images": 9}},
         "'test.errors' must be an integer. Received: '7'"),
        ({"test": {"accuracy": 1.0}}, "'test.loss' is missing"),
        ({"training": {**VERSION_2_EXPORT["training"], "recipe": {"epochs": 0}}},
         "'training.recipe.epochs' must be an integer >= 1. Received: 0"),
    ],
)  # fmt: skip
def test_a_bad_card_is_one_line_naming_the_file_and_field(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ModelError) as info:
        ModelCard.read(write_card(tmp_path, data))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / CARD_FILE}: ") and "\n" not in message
    assert expected in message
