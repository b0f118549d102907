"""`tuning transfer` end to end: tuned in its own study, scored by nested CV with an interval,
published with cards, plots and artifacts; its model names letters in `tuning predict`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from tests.helpers import TINY_SPACE
from tests.letters import write_letters
from tuning.artifacts import DASHBOARD_TRIAL_ARTIFACT_PREFIX
from tuning.cli import main
from tuning.device import detect
from tuning.errors import StudyMismatchError
from tuning.images.mnist import file_sha256
from tuning.images.preprocess import prepare_image
from tuning.memory import release_memory
from tuning.model.card import ModelCard, TransferCard
from tuning.model.file import load_model_file
from tuning.summaries import transfer_summary
from tuning.training.cv import wilson_interval
from tuning.transfer.card import TransferDetails
from tuning.transfer.run import TransferResult, run_transfer
from tuning.transfer.search import Search
from tuning.typed_json import from_json, to_json

CLASSES = ["alpha", "beta", "gamma"]


@dataclass(frozen=True)
class Published:
    out: Path
    storage: str
    card: TransferDetails
    messages: list[str]
    result: TransferResult


@pytest.fixture(scope="module")
def published(base_dir: Path, letters: Path, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """One transfer run: 2 trials per search, 2 outer and 2 inner folds, on 18 letters."""
    folder = tmp_path_factory.mktemp("transfer")
    storage = f"sqlite:///{folder / 'studies.db'}"
    messages: list[str] = []
    result = run_transfer(
        base_dir / "model.keras",
        data=letters,
        classes=CLASSES,
        out=folder / "greek_model",
        storage=storage,
        artifacts=folder / "artifacts",
        search=Search(trials=2, outer_folds=2, inner_folds=2, space=TINY_SPACE),
        seed=0,
        command="tuning transfer (test)",
        log=messages.append,
    )
    assert result.out_dir == folder / "greek_model"
    return Published(result.out_dir, storage, result.card, messages, result)


def test_the_published_folder_holds_the_model_its_cards_and_plots(published: Published) -> None:
    assert {p.name for p in published.out.iterdir()} == {
        "model.keras",
        "model_card.json",
        "transfer_card.json",
        "config.json",
        "cv_predictions.png",
        "confusion_matrix.png",
    }
    assert load_model_file(published.out / "model.keras").output_shape == (None, 3)
    release_memory()
    with Image.open(published.out / "cv_predictions.png") as grid:
        assert grid.size[0] > 400 and grid.size[1] > 200


def test_the_card_names_its_base_its_classes_and_its_files(
    published: Published, base_dir: Path
) -> None:
    card = published.card
    # The card on disk is the card returned.
    on_disk = json.loads((published.out / "transfer_card.json").read_text())
    assert on_disk == to_json(card) and from_json(TransferDetails, on_disk) == card
    assert card.study == "tiny-letters-alpha-beta-gamma"
    assert card.base.sha256 == file_sha256(base_dir / "model.keras")
    assert (card.base.study, card.base.trial) == ("tiny", 3)
    assert card.class_names == CLASSES
    assert set(card.params or {}) == {"learning_rate", "epochs", "augment", "unfreeze"}
    assert card.sha256 == {"model": file_sha256(published.out / "model.keras")}
    assert card.training is not None and card.training.device == detect().describe()
    model_card = ModelCard.read(published.out / "model.keras")
    assert isinstance(model_card, TransferCard) and model_card.class_names == CLASSES
    assert model_card.details == "transfer_card.json" and model_card.base == card.base
    assert card.cv is not None and model_card.cv is not None
    assert model_card.cv.accuracy == card.cv.accuracy


def test_the_command_line_summary_gives_the_score_its_interval_and_the_choice(
    published: Published,
) -> None:
    card = published.card
    assert card.cv is not None and card.tuning is not None
    low, high = card.cv.interval.low, card.cv.interval.high
    assert transfer_summary(published.result).splitlines()[:3] == [
        f"Transferred {card.base.path} to alpha, beta, gamma: {published.out}/",
        f"  nested-CV accuracy {card.cv.accuracy:.3f} ({card.cv.correct}/18), 95% Wilson "
        f"interval {low:.3f} to {high:.3f}",
        f"  study '{card.study}', best trial #{card.tuning.best_trial}: {card.params}",
    ]


def test_the_nested_cv_score_counts_every_image_once_with_its_wilson_interval(
    published: Published,
) -> None:
    cv = published.card.cv
    assert cv is not None
    counts = np.array(cv.confusion.counts)
    assert cv.images == counts.sum() == 18 and cv.correct == np.trace(counts)
    assert (cv.interval.low, cv.interval.high) == wilson_interval(cv.correct, 18)
    assert sum(f.held_out for f in cv.outer_folds) == 18 and len(cv.outer_folds) == 2
    # Pooled, the outer folds' accuracies make the nested-CV accuracy.
    assert sum(f.accuracy * f.held_out for f in cv.outer_folds) == pytest.approx(cv.correct)
    assert published.card.protocol.summary.startswith("Nested cross-validation")


def test_the_transfer_study_sits_in_the_storage_with_its_note_and_artifacts(
    published: Published,
) -> None:
    from optuna_dashboard import get_note

    card = published.card
    study = optuna.load_study(study_name=card.study, storage=published.storage)
    assert len(study.trials) == 2 and study.trials[0].user_attrs["baseline"]
    assert study.trials[0].params == {k["name"]: k["default"] for k in TINY_SPACE}
    assert card.tuning is not None and study.best_trial.number == card.tuning.best_trial
    assert study.user_attrs["protocol"]["classes"] == CLASSES
    assert study.metric_names == ["CV log loss"]  # the dashboard's charts say what is minimised
    note = get_note(study)
    assert "Nested-CV accuracy" in note and card.base.sha256 in note
    attached = [
        json.loads(v)["filename"]
        for k, v in study._storage.get_study_system_attrs(study._study_id).items()
        if k.startswith(f"{DASHBOARD_TRIAL_ARTIFACT_PREFIX}{study.best_trial._trial_id}:")
    ]
    assert {"model.keras", "transfer_card.json", "cv_predictions.png"} <= set(attached)
    assert len(list((published.out.parent / "artifacts").iterdir())) == len(attached)


def test_predict_names_letters_with_the_transferred_model(
    published: Published, letters: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The letter is made MNIST-like, as in training, and each output is named by the card."""
    letter = letters / "beta" / "beta_000.png"
    assert main(["predict", str(published.out / "model.keras"), str(letter), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)[0]
    model = load_model_file(published.out / "model.keras")
    expected = model.predict(prepare_image(letter)[None, ..., None], verbose=0)[0]
    release_memory()
    assert [t["label"] for t in predicted["top"]] == [CLASSES[i] for i in expected.argsort()[::-1]]
    chances = [t["probability"] for t in predicted["top"]]
    assert chances == pytest.approx(sorted(expected.tolist(), reverse=True), abs=1e-6)
    assert predicted["label"] == predicted["top"][0]["label"]


def test_another_class_list_under_the_same_study_name_is_refused_before_training(
    published: Published, base_dir: Path, letters: Path, tmp_path: Path
) -> None:
    with pytest.raises(StudyMismatchError, match="was made with classes="):
        run_transfer(
            base_dir / "model.keras",
            data=letters,
            classes=["alpha", "beta"],
            storage=published.storage,
            study_name=published.card.study,
            out=tmp_path / "other",
        )
    assert not (tmp_path / "other").exists()


def test_the_cli_warns_about_skipped_files_and_refuses_bad_class_lists(
    base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_letters(tmp_path / "letters", ["alpha", "beta"], 2)
    (root / "alpha" / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    model = str(base_dir / "model.keras")
    storage = f"sqlite:///{tmp_path / 's.db'}"

    assert main(["transfer", model, "--data", str(root), "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert f"warning: skipped 1 file(s): {root / 'alpha' / 'scan.png'}" in err
    assert "error: " in err and "2 usable image(s) in class 'alpha'" in err

    assert main(["transfer", model, "--data", str(root), "--classes", "alpha,omega"]) == 2
    assert "error: --classes: no folder for omega" in capsys.readouterr().err
    assert main(["transfer", model, "--data", str(root), "--trials", "0"]) == 2
    assert "error: --trials: must be in 1..500. Received: trials=0" in capsys.readouterr().err
