"""Shared by the transfer tests: a tiny digit network exported with a card, and letter images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SMALL_NET, save_digit_model
from tests.letters import write_letters

# Two conv blocks, so transfer can unfreeze the dense layer and then the last block.
TINY_NET = {**SMALL_NET, "conv_blocks": 2, "filters_1": 16, "convs_1": 1}
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


@pytest.fixture(scope="package")
def base_dir(mnist_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained for one epoch on 2,000 digits, with a card like an export's."""
    folder = tmp_path_factory.mktemp("base")
    return save_digit_model(mnist_npz, folder, TINY_NET, epochs=1, study="tiny", trial=3)


@pytest.fixture(scope="package")
def letters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_letters(
        tmp_path_factory.mktemp("greek") / "letters", ["alpha", "beta", "gamma"], 6
    )


def copy_base(base_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "base"
    shutil.copytree(base_dir, folder)
    return folder / "model.keras"
