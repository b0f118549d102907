"""A study's data from any source: where the study file's `[data] source` points, and what a
`.npz` or an image folder becomes (channel axis, integer labels, class names, optional test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.letters import write_letters
from tuning.errors import DataError
from tuning.images.dataset import DataSource, load_images, resolve_source
from tuning.images.mnist import file_sha256
from tuning.typed_json import to_json


def save_npz(path: Path, arrays: dict[str, Any]) -> Path:
    np.savez(path, **arrays)
    return path


def test_a_source_is_relative_to_the_study_file_and_may_name_a_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "letters").mkdir()
    assert resolve_source(None, base=tmp_path) == DataSource("mnist")
    assert resolve_source("mnist", base=tmp_path, override="m.npz") == DataSource(
        "mnist", Path("m.npz")
    )
    assert resolve_source("d.npz", base=tmp_path) == DataSource("npz", tmp_path / "d.npz")
    monkeypatch.setenv("MY_LETTERS", str(tmp_path / "letters"))
    assert resolve_source("$MY_LETTERS", base=Path("elsewhere")) == DataSource(
        "folder", tmp_path / "letters"
    )
    monkeypatch.delenv("MY_LETTERS")
    with pytest.raises(DataError, match="'\\$MY_LETTERS' names an environment variable that is"):
        resolve_source("$MY_LETTERS", base=tmp_path)


def test_an_npz_of_any_shape_gets_a_channel_axis_and_its_own_class_names(tmp_path: Path) -> None:
    path = save_npz(
        tmp_path / "d.npz",
        {
            "x_train": np.zeros((6, 5, 7), np.uint8),
            "y_train": np.array([[0], [1], [2], [0], [1], [2]], np.uint8),  # CIFAR's (N, 1)
            "class_names": np.array(["a", "b", "c"]),
        },
    )
    train = load_images(DataSource("npz", path))
    assert train is not None
    assert train.x.shape == (6, 5, 7, 1) and train.y.tolist() == [0, 1, 2, 0, 1, 2]
    assert train.class_names == ["a", "b", "c"] and train.sha256 == file_sha256(path)
    # A model trained on them gets the picture resized, its colours kept (the card's `input`).
    assert to_json(train.input_convention()) == {"shape": [5, 7, 1], "range": "0..255",
                                                 "preprocess": "resize"}  # fmt: skip
    # No test split: None, never an error and never a made-up one.
    assert load_images(DataSource("npz", path), split="test") is None


def test_an_image_folder_with_train_and_test_reads_both_with_the_same_classes(
    tmp_path: Path,
) -> None:
    write_letters(tmp_path / "set" / "train", ["alpha", "beta"], 3)
    write_letters(tmp_path / "set" / "test", ["beta", "alpha", "gamma"], 2, seed=1)
    source = DataSource("folder", tmp_path / "set")
    train = load_images(source)
    assert train is not None and train.class_names == ["alpha", "beta"]
    assert train.x.shape == (6, 28, 28, 1) and train.characters
    test = load_images(source, split="test", class_names=train.class_names)
    assert test is not None and test.class_names == ["alpha", "beta"] and len(test.y) == 4
    # A folder of class folders is all training data, with no test split.
    flat = DataSource("folder", tmp_path / "set" / "train")
    assert load_images(flat, split="test") is None


def test_class_names_that_are_not_folders_name_the_field(tmp_path: Path) -> None:
    write_letters(tmp_path / "set", ["alpha", "beta"], 2)
    with pytest.raises(DataError, match="^data.class_names: no folder for delta"):
        load_images(DataSource("folder", tmp_path / "set"), class_names=["alpha", "delta"])
