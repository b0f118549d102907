"""A study's images, whatever their source: MNIST, a `.npz` in the Keras layout (any image size,
1 or 3 channels, any number of classes), or an image folder (`train/<class>/*.png`, optional
`test/<class>/...`, read by `tuning.images.folder` as the Greek transfer reads its letters).

Every source becomes the same `Images`: (N, H, W, C) uint8 arrays, integer labels, class names,
the sha256 a study stores in its protocol, and how a new picture must be prepared to be fed to a
model trained on them (`input_convention`, written on the model card and read by `predict`).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuning.errors import DataError
from tuning.images.folder import Skipped, load_image_folder
from tuning.images.mnist import Split, file_sha256, load_mnist
from tuning.images.preprocess import CHARACTERS, RESIZE
from tuning.typed_json import OMIT_NONE

MNIST = "mnist"
DIGITS = [str(d) for d in range(10)]
CHANNELS = (1, 3)


@dataclass(frozen=True)
class DataSource:
    """Where a study's images come from: MNIST (`path`: its `.npz`, or None for $TUNING_MNIST
    or `keras.datasets`), a `.npz` file, or an image folder."""

    kind: str  # "mnist", "npz" or "folder"
    path: Path | None = None

    def describe(self) -> str:
        return f"{self.kind} {self.path}" if self.path else self.kind


def resolve_source(
    source: str | None, *, base: Path, override: str | Path | None = None
) -> DataSource:
    """The study file's `[data] source` ("mnist", or a path relative to `base`, the study file's
    folder, in which `$VARIABLES` are expanded) with `override` (a path, as given on the
    command line) in place of its location."""
    if not source or source == MNIST:
        return DataSource(MNIST, Path(override) if override else None)
    if override:
        path = Path(override)
    else:
        # "$TUNING_GREEK" and the like: the data lives where each user keeps it.
        expanded = os.path.expandvars(source)
        if "$" in expanded:
            raise DataError(
                f"data.source: {source!r} names an environment variable that is not set",
                param="data",
            )
        path = base / os.path.expanduser(expanded)
    return DataSource("folder" if path.is_dir() else "npz", path)


@dataclass(frozen=True)
class InputConvention:
    """How a picture becomes the input of a model trained on some images (a model card's
    `input`): pictures of single characters are made MNIST-like (`CHARACTERS`, light ink on
    dark), other images resized to `shape` with their colours kept (`RESIZE`)."""

    shape: tuple[int, ...] = (28, 28, 1)
    range: str = "0..255"
    ink: str | None = field(default="light on dark", metadata=OMIT_NONE)
    preprocess: str = CHARACTERS

    @property
    def resizes(self) -> bool:
        return self.preprocess == RESIZE


@dataclass(frozen=True)
class Images:
    """One split: `x` (N, H, W, C) uint8, `y` (N,) int64 labels in 0..len(class_names)-1."""

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    sha256: str
    source: str
    # Pictures of single characters (MNIST, image folders): `tuning predict` makes any photo
    # MNIST-like for them. Other images are resized to the model's input, colours kept.
    characters: bool = False
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.x.shape[1:]
        return int(height), int(width), int(channels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def input_convention(self) -> InputConvention:
        """How a picture becomes the input of a model trained on these images."""
        if self.characters:
            return InputConvention(shape=self.input_shape)
        return InputConvention(shape=self.input_shape, ink=None, preprocess=RESIZE)


def load_images(
    source: DataSource, *, split: Split = "train", class_names: Sequence[str] | None = None
) -> Images | None:
    """One split of `source`; None when the source has no such split (a test split is optional).

    `class_names` names the labels of a `.npz` (default: its own `class_names` array, else
    "0", "1", ...) and chooses the class folders of an image folder (default: all).

    Raises:
        DataError: the source is missing or malformed: one line naming the file and what was
            expected.
    """
    names = list(class_names) if class_names is not None else None
    if source.kind == MNIST:
        mnist = load_mnist(source.path, split=split)
        if names is not None and len(names) != len(DIGITS):
            raise DataError(f"data.class_names: MNIST has 10 classes. Received: {names}")
        return Images(
            mnist.x[..., None], mnist.y.astype(np.int64), names or DIGITS, mnist.sha256,
            mnist.source, characters=True,
        )  # fmt: skip
    if source.path is None:
        raise ValueError(f"a {source.kind} source needs a path. Received: {source}")
    if source.kind == "folder":
        return _load_folder(source.path, split, names)
    return _load_npz(source.path, split, names)


def load_training(source: DataSource, *, class_names: Sequence[str] | None = None) -> Images:
    """The training split of `source` (the test split is never read here); `class_names` as
    for `load_images`.

    Raises:
        DataError: the source is missing or malformed, or has no training split.
    """
    images = load_images(source, split="train", class_names=class_names)
    if images is None:  # every source has a training split, or says why not
        raise DataError(f"{source.describe()}: no training split", param="data")
    return images


def _load_folder(root: Path, split: Split, names: list[str] | None) -> Images | None:
    # `root/train/<class>` (and maybe `root/test/<class>`), or `root/<class>` with no test split.
    split_root = root / split if (root / "train").is_dir() else (root if split == "train" else None)
    if split_root is None or not split_root.is_dir():
        return None
    try:
        folder = load_image_folder(split_root, names)
    except DataError as exc:
        if exc.param != "classes":
            raise
        raise DataError(f"data.class_names: {exc.message}") from None
    return Images(
        folder.x[..., None], folder.y, folder.class_names, folder.sha256, str(split_root),
        characters=True, skipped=folder.skipped,
    )  # fmt: skip


def _load_npz(path: Path, split: Split, names: list[str] | None) -> Images | None:
    if not path.is_file():
        raise DataError(
            f"{path}: not found; expected mnist, a .npz in the Keras layout or an image folder",
            param="data",
        )
    xkey, ykey = f"x_{split}", f"y_{split}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            if xkey not in archive.files or ykey not in archive.files:
                if split == "test":
                    return None
                missing = xkey if xkey not in archive.files else ykey
                raise DataError(
                    f"{path}: no '{missing}' array; expected x_train, y_train (and optionally "
                    f"x_test, y_test, class_names), the keras.datasets layout. Received: "
                    f"{', '.join(archive.files) or 'no arrays'}"
                )
            x, y = archive[xkey], archive[ykey]
            if names is None and "class_names" in archive.files:
                names = [str(n) for n in archive["class_names"].tolist()]
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from None
    x, y, names = _check_arrays(x, y, names, where=f"{path} [{split}]")
    return Images(x, y, names, file_sha256(path), str(path))


def _check_arrays(
    x: np.ndarray, y: np.ndarray, names: list[str] | None, *, where: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, H, W, C) uint8 images with C in 1 or 3, and labels in 0..classes-1."""
    x = _check_images(x, where=where)
    y = _check_labels(y, len(x), where=where)
    classes = len(names) if names is not None else int(y.max()) + 1
    if y.min() < 0 or y.max() >= classes:
        raise DataError(
            f"{where}: labels must be integers in 0..{classes - 1} (one per class name). "
            f"Received: range {y.min()}..{y.max()}"
        )
    if classes < 2:
        raise DataError(f"{where}: a classifier needs at least 2 classes. Received: 1 class")
    return x, y.astype(np.int64), names if names is not None else [str(i) for i in range(classes)]


def _check_images(x: np.ndarray, *, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in CHANNELS or min(x.shape[1:3], default=0) < 1:
        raise DataError(
            f"{where}: images must be (N, H, W) or (N, H, W, C) with C = 1 or 3. "
            f"Received: shape {x.shape}"
        )
    if x.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8 (0..255). Received: dtype {x.dtype}")
    return x


def _check_labels(y: np.ndarray, images: int, *, where: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:  # CIFAR's (N, 1) labels
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != images or not len(y):
        raise DataError(
            f"{where}: labels must be one integer per image (class indices, not one-hot). "
            f"Received: {images} images, labels of shape {y.shape} and dtype {y.dtype}"
        )
    return y
