from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np
import pytest

from tuning.errors import DataError
from tuning.images.mnist import load_mnist, resolve_mnist_path, stratified_subset


def npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def valid_arrays(n: int = 50) -> dict[str, np.ndarray]:
    x = np.zeros((n, 28, 28), np.uint8)
    y = (np.arange(n) % 10).astype(np.uint8)
    return {"x_train": x, "y_train": y, "x_test": x[:10], "y_test": y[:10]}


def test_loads_one_split_and_records_the_file_sha256(mnist_npz: Path) -> None:
    train = load_mnist(mnist_npz, split="train")
    test = load_mnist(mnist_npz, split="test")
    assert train.x.shape == (2000, 28, 28) and train.x.dtype == np.uint8
    assert test.x.shape == (500, 28, 28)
    assert train.sha256 == hashlib.sha256(mnist_npz.read_bytes()).hexdigest()
    assert train.source == str(mnist_npz)


def test_flag_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNING_MNIST", "/from/env.npz")
    assert resolve_mnist_path("/from/flag.npz") == Path("/from/flag.npz")
    assert resolve_mnist_path(None) == Path("/from/env.npz")
    monkeypatch.delenv("TUNING_MNIST")
    assert resolve_mnist_path(None) is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"x_train": None}, "missing array 'x_train'; expected keys x_train, y_train"),
        (
            {"x_train": np.zeros((50, 32, 32), np.uint8)},
            "shape (N, 28, 28). Received: (50, 32, 32)",
        ),
        (
            {"x_train": np.zeros((50, 28, 28), np.float32)},
            "must be uint8 (0..255). Received: dtype float32",
        ),
        ({"y_train": np.zeros((50, 10), np.uint8)}, "labels must be a 1-D integer array"),
        ({"y_train": np.full(50, 12, np.uint8)}, "labels must be in 0..9. Received: range 12..12"),
        ({"y_train": np.zeros(49, np.uint8)}, "50 images but 49 labels"),
    ],
)
def test_bad_arrays_are_refused_naming_the_file(
    tmp_path: Path, change: dict[str, np.ndarray | None], expected: str
) -> None:
    arrays = valid_arrays()
    for key, value in change.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    path = npz(tmp_path, **arrays)
    with pytest.raises(DataError) as info:
        load_mnist(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="MNIST file not found.*TUNING_MNIST"):
        load_mnist(tmp_path / "absent.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(DataError, match="not a readable .npz archive"):
        load_mnist(corrupt)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(npz(tmp_path, **valid_arrays()).read_bytes()[:300])
    with pytest.raises(DataError, match="not a readable .npz archive"):
        load_mnist(truncated)


def test_offline_without_a_path_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNING_MNIST", raising=False)

    def offline() -> None:
        raise OSError("URL fetch failure: network is unreachable")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DataError) as info:
        load_mnist(None)
    assert "give the path of a local mnist.npz or set TUNING_MNIST to it" in str(info.value)
    assert info.value.param == "data"
    assert "\n" not in str(info.value)


def test_stratified_subset_keeps_class_balance_and_is_repeatable() -> None:
    y = np.repeat(np.arange(10), [100, 200, 100, 100, 100, 100, 100, 100, 100, 100]).astype(
        np.uint8
    )
    x = np.arange(len(y))
    x1, y1 = stratified_subset(x, y, size=550, seed=0)
    x2, _ = stratified_subset(x, y, size=550, seed=0)
    x3, _ = stratified_subset(x, y, size=550, seed=1)
    assert len(y1) == 550 and np.array_equal(x1, x2) and not np.array_equal(x1, x3)
    assert np.bincount(y1)[1] == 100 and np.bincount(y1)[0] == 50
    with pytest.raises(DataError, match="fidelity.subset=5000 images but the data has only 1100"):
        stratified_subset(x, y, size=5000, seed=0)
