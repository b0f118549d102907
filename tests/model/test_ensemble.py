"""An ensemble is one safe `.keras` file whose output is the mean of its members' outputs, and a
predictions file keeps what a model said about each test image."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from tuning.errors import ModelError
from tuning.model.ensemble import build_ensemble, ensemble_members
from tuning.model.file import load_model_file
from tuning.model.predictions import PREDICTIONS_FILE, TestPredictions, test_data_sha256


def member(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="block1_conv0")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="relu", name="dense")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="output")(x))


def test_an_ensembles_predictions_are_the_mean_of_its_members(tmp_path: Path) -> None:
    members = [member(seed) for seed in range(3)]
    x = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    path = tmp_path / "model.keras"
    build_ensemble(members).save(path)
    loaded = load_model_file(path)  # safe_mode=True: built-in layers only
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    parts = ensemble_members(loaded)
    assert [p.name for p in parts] == ["member_0", "member_1", "member_2"]
    np.testing.assert_allclose(parts[1].predict(x, verbose=0), members[1].predict(x, verbose=0))
    assert ensemble_members(member(0)) == []  # a single network has no members


def test_an_ensemble_needs_two_members_of_one_shape() -> None:
    with pytest.raises(ValueError, match="at least 2 members. Received: 1"):
        build_ensemble([member(0)])
    inputs = keras.Input((14, 14, 1))
    other = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="share their input and output shapes"):
        build_ensemble([member(0), other])


def test_predictions_round_trip_with_their_members_and_test_hash(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 255, (20, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 20)
    members = rng.dirichlet(np.ones(10), size=(3, 20))
    saved = TestPredictions(y, members.mean(axis=0), test_data_sha256(x, y), members)
    saved.save(tmp_path)
    loaded = TestPredictions.load(tmp_path / "model.keras")  # the model file finds its file
    np.testing.assert_array_equal(loaded.labels, y)
    np.testing.assert_allclose(loaded.probabilities, saved.probabilities, rtol=1e-6)
    assert loaded.member_count == 3 and loaded.data_sha256 == saved.data_sha256
    np.testing.assert_allclose(loaded.member(2).probabilities, members[2], rtol=1e-6)
    assert loaded.errors == int(np.sum(saved.probabilities.argmax(1) != y))
    # The same images hash alike however they were read; other images or labels do not.
    assert test_data_sha256(x.copy(), y.astype(np.int32)) == saved.data_sha256
    assert test_data_sha256(x, (y + 1) % 10) != saved.data_sha256
    assert test_data_sha256(x.reshape(20, 784), y) != saved.data_sha256  # same bytes, not images


def test_a_bad_predictions_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / PREDICTIONS_FILE).write_text("not npz")
    with pytest.raises(ModelError, match="not a test predictions file"):
        TestPredictions.load(tmp_path)
    np.savez(tmp_path / PREDICTIONS_FILE, labels=np.zeros(4), probabilities=np.zeros((3, 10)),
             data_sha256=np.array("x"))  # fmt: skip
    with pytest.raises(ModelError, match=r"expected probabilities of shape \(4, classes\)"):
        TestPredictions.load(tmp_path)
