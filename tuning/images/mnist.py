"""MNIST arrays from a local `.npz` (Keras layout) or `keras.datasets`, validated and hashed."""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tuning.errors import DataError

ENV_MNIST = "TUNING_MNIST"
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
Split = Literal["train", "test"]


@dataclass(frozen=True)
class LabeledImages:
    """One split of MNIST: `x` (N, 28, 28) uint8, `y` (N,) uint8, and where it came from."""

    x: np.ndarray
    y: np.ndarray
    sha256: str
    source: str


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def resolve_mnist_path(path: str | Path | None = None) -> Path | None:
    """`path` wins over `TUNING_MNIST`; None means "use keras.datasets"."""
    chosen = path or os.environ.get(ENV_MNIST) or None
    return Path(chosen) if chosen else None


def load_mnist(path: str | Path | None = None, *, split: Split = "train") -> LabeledImages:
    """Load one split of MNIST.

    Only the requested split is read, so a study never touches the test images.

    Raises:
        DataError: the file is missing, corrupt, or its arrays have the wrong keys, shapes or
            dtypes; or no path was given and `keras.datasets.mnist.load_data()` failed (offline).
    """
    resolved = resolve_mnist_path(path)
    if resolved is None:
        return _load_from_keras(split)
    if not resolved.is_file():
        raise DataError(
            f"{resolved}: MNIST file not found; expected the Keras-layout mnist.npz "
            f"(give its path here or in {ENV_MNIST})",
            param="data",
        )
    xkey, ykey = f"x_{split}", f"y_{split}"
    try:
        with np.load(resolved, allow_pickle=False) as archive:
            missing = [k for k in (xkey, ykey) if k not in archive.files]
            if missing:
                raise DataError(
                    f"{resolved}: missing array '{missing[0]}'; expected keys x_train, y_train, "
                    f"x_test, y_test (the keras.datasets.mnist layout). Received: {archive.files}"
                )
            x, y = archive[xkey], archive[ykey]
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{resolved}: not a readable .npz archive ({exc})") from None
    validate_arrays(x, y, source=f"{resolved} [{split}]")
    return LabeledImages(x=x, y=y, sha256=file_sha256(resolved), source=str(resolved))


def _load_from_keras(split: Split) -> LabeledImages:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as exc:
        raise DataError(
            f"MNIST is not available: no file or {ENV_MNIST} was given and "
            f"keras.datasets.mnist.load_data() failed ({type(exc).__name__}); give the path "
            f"of a local mnist.npz or set {ENV_MNIST} to it",
            param="data",
        ) from None
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    validate_arrays(x, y, source=f"keras.datasets.mnist [{split}]")
    cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"
    sha = file_sha256(cached) if cached.is_file() else _arrays_sha256(x, y)
    return LabeledImages(x=x, y=y, sha256=sha, source="keras.datasets.mnist")


def _arrays_sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def validate_arrays(x: np.ndarray, y: np.ndarray, *, source: str) -> None:
    """Check MNIST's contract: uint8 images (N, 28, 28), integer labels 0..9, same N."""
    if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{source}: images must have shape (N, 28, 28). Received: {x.shape}")
    if x.dtype != np.uint8:
        raise DataError(f"{source}: images must be uint8 (0..255). Received: dtype {x.dtype}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{source}: labels must be a 1-D integer array. Received: shape {y.shape}, "
            f"dtype {y.dtype}"
        )
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{source}: labels must be in 0..9. Received: range {y.min()}..{y.max()}")


def stratified_subset(
    x: np.ndarray, y: np.ndarray, *, size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced random sample of `size` images, the same for the same seed."""
    if size > len(y):
        raise DataError(
            f"the study asks for fidelity.subset={size} images but the data has only {len(y)}"
        )
    if size == len(y):
        return x, y
    from sklearn.model_selection import train_test_split

    x_sub, _, y_sub, _ = train_test_split(
        x, y, train_size=size, stratify=y, random_state=seed, shuffle=True
    )
    return x_sub, y_sub
