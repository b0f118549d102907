"""The transfer network: a verified base, frozen, with a new head that learns; its augmenter and
its log loss."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.helpers import HEAD_ONLY, copy_base
from tuning.cli import main
from tuning.errors import ModelError
from tuning.images.folder import load_image_folder
from tuning.memory import release_memory
from tuning.model.card import CARD_FILE
from tuning.model.file import load_model_file
from tuning.transfer import model as transfer


def test_a_base_model_that_does_not_match_its_card_is_refused(
    base_dir: Path, letters: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = copy_base(base_dir, tmp_path)
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


def test_unfreezing_one_group_fine_tunes_the_dense_layer_only(
    base_dir: Path, letters: Path
) -> None:
    base = transfer.load_base(base_dir / "model.keras")
    data = load_image_folder(letters)
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


def ensemble_base(base_dir: Path, folder: Path, errors: list[int]) -> Path:
    """The base network and a perturbed copy as a two-member ensemble export, whose card gives
    the members' MNIST test errors."""
    from tuning.images.mnist import file_sha256
    from tuning.model.card import EnsembleSummary, ExportCard, MemberScore, ModelCard
    from tuning.model.ensemble import build_ensemble

    members = [load_model_file(base_dir / "model.keras") for _ in errors]
    members[1].set_weights([w + 0.01 for w in members[1].get_weights()])
    folder.mkdir()
    path = folder / "model.keras"
    build_ensemble(members).save(path)
    card = ModelCard.read(base_dir / "model.keras")
    assert isinstance(card, ExportCard)
    scores = [MemberScore(3, 42 + i, e, 1.0) for i, e in enumerate(errors)]
    ensemble = EnsembleSummary("seeds", scores, None, None, [])
    sha = {"model": file_sha256(path), "data": card.sha256.get("data", "")}
    dataclasses.replace(card, ensemble=ensemble, sha256=sha).write(folder)
    return path


def test_from_an_ensemble_transfer_freezes_its_best_member_or_all_members_features(
    base_dir: Path, letters: Path, tmp_path: Path
) -> None:
    path = ensemble_base(base_dir, tmp_path / "ensemble", errors=[9, 4])
    single = transfer.load_base(base_dir / "model.keras")
    best = transfer.load_base(path, members="best")
    assert best.members == "best" and best.froze is not None
    assert best.froze.startswith("member 2 of 2, the one with the fewest test errors: 4")
    # The second member is the perturbed copy: its weights, not the first's.
    assert all(np.allclose(a, b + 0.01) for a, b in zip(best.weights, single.weights, strict=True))
    every = transfer.load_base(path, members="all")
    width = single.config["config"]["layers"][-1]["build_config"]["input_shape"][-1]
    assert every.froze == f"the features of all 2 members side by side, {2 * width} in all"
    data = load_image_folder(letters)
    model = transfer.train(every, data.x, data.y, HEAD_ONLY, num_classes=3, seed=0)
    assert [w.path for w in model.trainable_weights] == ["classifier/kernel", "classifier/bias"]
    assert model.layers[-1].input.shape[-1] == 2 * width
    assert transfer.unfreeze_groups(model) == []  # whole member networks are never unfrozen
    model.save(tmp_path / "transfer.keras")
    loaded = load_model_file(tmp_path / "transfer.keras")  # safe_mode=True
    np.testing.assert_allclose(
        transfer.predict_proba(loaded, data.x), transfer.predict_proba(model, data.x), atol=1e-6
    )
    with pytest.raises(ValueError, match="members must be one of best, all. Received: 'some'"):
        transfer.load_base(path, members="some")
    release_memory()
