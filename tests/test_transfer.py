"""`tuning transfer`: a verified base network, frozen, with a new head; tuned in its own study,
scored by nested CV with an interval; published with cards, plots and artifacts; and its model
names letters in `tuning predict`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from PIL import Image

from tests.conftest import ROOT, save_digit_model
from tests.letters import write_letters
from tuning import transfer
from tuning.artifacts import DASHBOARD_TRIAL_ARTIFACT_PREFIX
from tuning.card import CARD_FILE
from tuning.cli import main
from tuning.data import file_sha256
from tuning.device import detect
from tuning.errors import ModelError, StudyMismatchError
from tuning.imagefolder import load_image_folder
from tuning.memory import release_memory
from tuning.modelfile import load_model_file
from tuning.transfer_report import wilson_interval
from tuning.transfer_run import run_transfer
from tuning.transfer_search import Search

TINY_NET = {
    "conv_blocks": 2,
    "kernel_size": 3,
    "batch_norm": False,
    "filters_0": 16,
    "convs_0": 1,
    "filters_1": 16,
    "convs_1": 1,
    "dense_units": 64,
    "dropout": 0.0,
    "optimizer": "adam",
    "learning_rate": 3e-3,
    "batch_size": 64,
    "epochs": 1,
}
# A search space small enough for tests: 1-2 epochs, at most the dense layer unfrozen.
TINY_SPACE = [
    {"class": "Float", "name": "learning_rate", "min_value": 1e-2, "max_value": 3e-2,
     "sampling": "log", "default": 2e-2},
    {"class": "Int", "name": "epochs", "min_value": 1, "max_value": 2, "default": 2},
    {"class": "Float", "name": "augment", "min_value": 0.0, "max_value": 0.5, "step": 0.5,
     "default": 0.5},
    {"class": "Int", "name": "unfreeze", "min_value": 0, "max_value": 1, "default": 0},
]  # fmt: skip
HEAD_ONLY = {"learning_rate": 0.02, "epochs": 2, "augment": 0.5, "unfreeze": 0}


@pytest.fixture(scope="module")
def base_dir(mnist_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained for one epoch on 2,000 digits, with a card like an export's."""
    folder = tmp_path_factory.mktemp("base")
    return save_digit_model(mnist_npz, folder, TINY_NET, epochs=1, study="tiny", trial=3)


@pytest.fixture(scope="module")
def letters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_letters(
        tmp_path_factory.mktemp("greek") / "letters", ["alpha", "beta", "gamma"], 6
    )


def _copy_base(base_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "base"
    shutil.copytree(base_dir, folder)
    return folder / "model.keras"


def test_a_base_model_that_does_not_match_its_card_is_refused(
    base_dir: Path, letters: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _copy_base(base_dir, tmp_path)
    card = json.loads(model.with_name(CARD_FILE).read_text())
    card["sha256"]["model"] = "0" * 64
    model.with_name(CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="sha256 mismatch: its card .* says 0000000000000000"):
        transfer.load_base(model)

    status = main(
        ["transfer", str(model), "--data", str(letters), "--storage", f"sqlite:///{tmp_path}/s.db"]
    )
    assert status == 2
    assert "error: " in capsys.readouterr().err and not (tmp_path / "s.db").exists()

    model.with_name(CARD_FILE).write_text(json.dumps({"study": "tiny"}))
    with pytest.raises(ModelError, match="expected a 'sha256': {'model': HEX} field"):
        transfer.load_base(model)
    model.with_name(CARD_FILE).unlink()
    with pytest.raises(ModelError, match="no model_card.json beside it"):
        transfer.load_base(model)


def test_the_new_head_learns_while_the_mnist_network_stays_frozen(
    base_dir: Path, letters: Path
) -> None:
    base = transfer.load_base(base_dir / "model.keras")
    data = load_image_folder(letters)
    assert base.study == "tiny" and base.trial == 3

    keras.utils.set_random_seed(0)  # the head train() starts from, before any update
    untrained = transfer.predict_proba(transfer.build(base, 3), data.x)
    release_memory()
    model = transfer.train(base, data.x, data.y, HEAD_ONLY, num_classes=3, seed=0)
    assert model.output_shape == (None, 3)
    assert [w.path for w in model.trainable_weights] == ["classifier/kernel", "classifier/bias"]
    # Every layer below the head still holds the MNIST weights (the old 10-way head is gone).
    assert all(
        np.array_equal(a, b)
        for a, b in zip(model.get_weights()[:-2], base.weights[:-2], strict=True)
    )
    probs = transfer.predict_proba(model, data.x)
    assert probs.shape == (18, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # The new head learns: two epochs on the letters lower their loss well below the start's.
    assert transfer.log_loss(data.y, probs) < 0.8 * transfer.log_loss(data.y, untrained)
    release_memory()

    assert transfer.unfreeze_groups(transfer.build(base, 3)) == [
        ["dense"],
        ["block1_conv0"],
        ["block0_conv0"],
    ]
    tuned = transfer.train(
        base, data.x, data.y, {**HEAD_ONLY, "unfreeze": 1}, num_classes=3, seed=0
    )
    weights = {w.path: keras.ops.convert_to_numpy(w) for w in tuned.weights}
    release_memory()
    original = keras.saving.load_model(base_dir / "model.keras", safe_mode=True)
    before = {w.path: keras.ops.convert_to_numpy(w) for w in original.weights}
    release_memory()
    assert not np.array_equal(weights["dense/kernel"], before["dense/kernel"])  # fine-tuned
    assert np.array_equal(weights["block1_conv0/kernel"], before["block1_conv0/kernel"])


def test_augmentation_moves_the_letter_a_little_and_is_reproducible() -> None:
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    image[0, 8:20, 12:16] = 255
    same = transfer.augment(image, 0.0, seed=0)
    assert np.array_equal(same, image)
    moved = transfer.augment(np.repeat(image, 20, axis=0), 1.0, seed=0)
    again = transfer.augment(np.repeat(image, 20, axis=0), 1.0, seed=0)
    assert np.array_equal(moved, again)
    assert not np.array_equal(moved, transfer.augment(np.repeat(image, 20, axis=0), 1.0, seed=1))
    assert sum(not np.array_equal(m, image[0]) for m in moved) == 20
    mass = moved.reshape(20, -1).sum(axis=1) / image.sum()
    assert np.all((mass > 0.7) & (mass < 1.35))  # scaled by at most 12%, nothing cut off
    assert moved[:, :3].max() == 0 and moved[:, -3:].max() == 0


def test_log_loss_still_ranks_predictions_too_confident_for_float32() -> None:
    y = np.array([0, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    assert transfer.log_loss(y, probs) == pytest.approx(-np.mean(np.log([0.7, 0.6])))
    # float32 rounds both to p = 1.0 exactly; the second is still the more confident one.
    sure = np.array([[1.0, 1e-6, 0.0]], dtype=np.float32).astype(np.float64)
    surer = np.array([[1.0, 1e-9, 0.0]], dtype=np.float32).astype(np.float64)
    assert 0 < transfer.log_loss(y[:1], surer) < transfer.log_loss(y[:1], sure)


def test_transfer_does_not_load_the_export_pipeline() -> None:
    """Transfer reads an exported model through its card; it never needs the code that made it."""
    check = (
        "import sys, tuning.transfer_run, tuning.transfer_search; "
        "print(sorted(m for m in sys.modules if m in ('tuning.export', 'tuning.report')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "['tuning.report']"  # the shared plots, not the pipeline


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(27, 27)
    assert high == 1.0 and low == pytest.approx(0.8754, abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)


def test_transfer_end_to_end_publishes_a_model_that_names_letters(
    base_dir: Path, letters: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    out = tmp_path / "greek_model"
    messages: list[str] = []
    result = run_transfer(
        base_dir / "model.keras",
        data=letters,
        classes=["alpha", "beta", "gamma"],
        out=out,
        storage=storage,
        search=Search(trials=2, outer_folds=2, inner_folds=2, space=TINY_SPACE),
        seed=0,
        command="tuning transfer (test)",
        log=messages.append,
    )
    assert result.out_dir == out
    assert {p.name for p in out.iterdir()} == {
        "model.keras",
        "model_card.json",
        "transfer_card.json",
        "config.json",
        "cv_predictions.png",
        "confusion_matrix.png",
    }
    card = json.loads((out / "transfer_card.json").read_text())
    assert card["study"] == "tiny-letters-alpha-beta-gamma"
    assert card["base"]["sha256"] == file_sha256(base_dir / "model.keras")
    assert (card["base"]["study"], card["base"]["trial"]) == ("tiny", 3)
    assert card["class_names"] == ["alpha", "beta", "gamma"]
    cv = card["cv"]
    # The held-out predictions behind the figures: the confusion matrix counts every image
    # once, its diagonal is the correct ones, and the interval is Wilson's for that count.
    counts = np.array(cv["confusion"]["counts"])
    assert cv["images"] == counts.sum() == 18 and cv["correct"] == np.trace(counts)
    assert (cv["interval"]["low"], cv["interval"]["high"]) == wilson_interval(cv["correct"], 18)
    assert len(cv["outer_folds"]) == 2
    assert card["protocol"]["summary"].startswith("Nested cross-validation")
    assert set(card["params"]) == {"learning_rate", "epochs", "augment", "unfreeze"}
    assert card["sha256"]["model"] == file_sha256(out / "model.keras")
    model_card = json.loads((out / CARD_FILE).read_text())
    assert model_card["class_names"] == ["alpha", "beta", "gamma"]
    assert load_model_file(out / "model.keras").output_shape == (None, 3)
    release_memory()
    with Image.open(out / "cv_predictions.png") as grid:
        assert grid.size[0] > 400 and grid.size[1] > 200

    # The study sits next to the others in the same storage, with its note and artifacts.
    study = optuna.load_study(study_name=card["study"], storage=storage)
    assert len(study.trials) == 2 and study.trials[0].user_attrs["baseline"]
    assert study.best_trial.number == card["tuning"]["best_trial"]
    assert study.user_attrs["protocol"]["classes"] == ["alpha", "beta", "gamma"]
    assert study.metric_names == ["CV log loss"]  # the dashboard's charts say what is minimised
    assert card["training"]["device"] == detect().describe()
    from optuna_dashboard import get_note

    note = get_note(study)
    assert "Nested-CV accuracy" in note and card["base"]["sha256"] in note
    attached = [
        json.loads(v)["filename"]
        for k, v in study._storage.get_study_system_attrs(study._study_id).items()
        if k.startswith(f"{DASHBOARD_TRIAL_ARTIFACT_PREFIX}{study.best_trial._trial_id}:")
    ]
    assert {"model.keras", "transfer_card.json", "cv_predictions.png"} <= set(attached)
    assert len(list((tmp_path / "artifacts").iterdir())) == len(attached)

    # `tuning predict` on the transferred model names letters.
    capsys.readouterr()
    letter = letters / "beta" / "beta_000.png"
    assert main(["predict", str(out / "model.keras"), str(letter), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)[0]
    top = predicted["top"]
    assert predicted["label"] == top[0]["label"] in {"alpha", "beta", "gamma"}
    chances = [t["probability"] for t in top]
    assert chances == sorted(chances, reverse=True) and sum(chances) == pytest.approx(1, abs=1e-3)

    # Another class list under the same study name is refused before any training.
    with pytest.raises(StudyMismatchError, match="was made with classes="):
        run_transfer(
            base_dir / "model.keras",
            data=letters,
            classes=["alpha", "beta"],
            storage=storage,
            study_name=card["study"],
            out=tmp_path / "other",
        )


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
    assert "error: --trials must be in 1..500. Received: 0" in capsys.readouterr().err
