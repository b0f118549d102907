"""Read an "image folder" dataset (one subfolder per class, folder name = class name) into
MNIST-like 28x28 images, with `tuning.images.preprocess.prepare_image`, the preprocessing of `tuning
predict`, so a model trained on them sees at prediction time exactly what it saw in training.

Files that cannot be used (not an image, corrupt, too small, no ink) are skipped and listed, so
one stray file does not stop a run; a class left with no usable image is an error.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tuning.errors import DataError, ImageError
from tuning.images.preprocess import prepare_image, read_image

ENV_GREEK = "TUNING_GREEK"
# Below this many pixels on the shorter side a photo holds too little of a character to be
# trusted (MNIST's glyphs alone are 20 px); such files are skipped with a warning.
MIN_SIDE = 16


@dataclass(frozen=True)
class Skipped:
    """A file left out, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


@dataclass(frozen=True)
class ImageFolder:
    """Preprocessed images (N, 28, 28) uint8, light ink on black, their labels and sources."""

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    paths: list[Path]
    root: Path
    sha256: str
    skipped: list[Skipped] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        return {name: int(np.sum(self.y == i)) for i, name in enumerate(self.class_names)}


def resolve_data_dir(data: str | Path | None) -> Path:
    """`data` wins over `$TUNING_GREEK`.

    Raises:
        DataError: neither is given, or the folder does not exist.
    """
    chosen = data or os.environ.get(ENV_GREEK)
    if not chosen:
        raise DataError(
            f"no image folder given; expected a folder with one subfolder per class, here or in "
            f"{ENV_GREEK}",
            param="data",
        )
    root = Path(chosen)
    if not root.is_dir():
        raise DataError(
            f"{root}: not a folder; expected one subfolder per class. Received: {chosen}",
            param="data",
        )
    return root


def class_folders(root: Path) -> list[str]:
    """The class names in `root`: its non-hidden subfolders, sorted."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def parse_classes(text: str | None) -> list[str] | None:
    """`"alpha, beta,gamma"` -> `["alpha", "beta", "gamma"]`; None or "" -> None (all)."""
    if not text or not text.strip():
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"names a class twice. Received: {', '.join(duplicates)}", param="classes")
    return names


def load_image_folder(
    root: str | Path, classes: list[str] | None = None, *, min_side: int = MIN_SIDE
) -> ImageFolder:
    """Every usable image of `classes` (default: all subfolders) under `root`, preprocessed.

    Grayscale, RGB, RGBA, palette and 16-bit files all work. Hidden files are ignored; other
    files that are not images, are corrupt, are under `min_side` pixels on a side, or hold no
    ink are skipped and listed in `skipped`.

    Raises:
        DataError: fewer than 2 classes, a class name not in `root`, or a class folder with no
            usable image.
    """
    root = Path(root)
    available = class_folders(root)
    chosen = classes if classes is not None else available
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise DataError(
            f"no folder for {', '.join(unknown)} in {root}; available classes: "
            f"{', '.join(available) or 'none'}",
            param="classes",
        )
    if len(chosen) < 2:
        raise DataError(
            f"{root}: a classifier needs at least 2 classes (one subfolder each). "
            f"Received: {', '.join(chosen) or 'no subfolder'}"
        )
    images: list[np.ndarray] = []
    labels: list[int] = []
    paths: list[Path] = []
    skipped: list[Skipped] = []
    digest = hashlib.sha256()
    for label, name in enumerate(chosen):
        used = _read_class(root / name, min_side, digest, skipped)
        images += [image for _, image in used]
        paths += [path for path, _ in used]
        labels += [label] * len(used)
    return ImageFolder(
        x=np.stack(images),
        y=np.asarray(labels, dtype=np.int64),
        class_names=list(chosen),
        paths=paths,
        root=root,
        sha256=digest.hexdigest(),
        skipped=skipped,
    )


def _read_class(
    folder: Path, min_side: int, digest: Any, skipped: list[Skipped]
) -> list[tuple[Path, np.ndarray]]:
    """The usable images of one class folder, prepared; the files used go into `digest`, the
    ones skipped into `skipped`.

    Raises:
        DataError: the folder has no usable image.
    """
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    used = []
    for path in files:
        try:
            prepared = prepare_image(_read_checked(path, min_side))
        except ImageError as exc:
            skipped.append(Skipped(path, _reason(exc, path)))
            continue
        used.append((path, prepared))
        digest.update(f"{folder.name}/{path.name}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    if not used:
        mine = [str(s) for s in skipped if s.path.parent == folder]
        left_out = f"; skipped: {', '.join(mine)}" if mine else ""
        raise DataError(
            f"{folder}: no usable image for class '{folder.name}'; expected PNG or JPEG files "
            f"of at least {min_side}x{min_side} px. Received: {len(files)} file(s)" + left_out
        )
    return used


def _read_checked(path: Path, min_side: int) -> Image.Image:
    image = read_image(path)
    if min(image.size) < min_side:
        raise ImageError(
            f"{path}: too small: {image.size[0]}x{image.size[1]} px, under {min_side} px a side"
        )
    return image


def _reason(exc: ImageError, path: Path) -> str:
    # The messages start with the path; the skip list already names the file.
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def skipped_warning(skipped: list[Skipped]) -> str | None:
    """One warning line naming every skipped file and why, or None if none was skipped."""
    if not skipped:
        return None
    return f"skipped {len(skipped)} file(s): " + "; ".join(str(s) for s in skipped)
