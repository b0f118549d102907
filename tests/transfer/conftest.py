"""Shared by the transfer tests: a tiny digit network exported with a card, and letter images."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import TINY_NET, save_digit_model
from tests.letters import write_letters


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
