"""A small synthetic image dataset, rendered locally with Pillow and NumPy (nothing is downloaded).

Four classes, in label order `circle`, `square`, `triangle`, `cross`: 32x32 RGB images, each a
random background colour with one shape in a random colour clearly lighter or darker, of random
size (about 10-24 px), centre and (except for circles) rotation, plus light pixel noise. Shapes
are drawn at 4x and downsampled, so their edges are antialiased. The arrays follow the Keras
`.npz` layout (`x_train`, `y_train`, `x_test`, `y_test`) with `class_names` added.

    python -m examples.make_shapes --out storage/data/shapes.npz --png-dir storage/data/shapes_png
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

CLASS_NAMES = ("circle", "square", "triangle", "cross")
IMAGE_SIZE = 32

_SCALE = 4  # drawn at 4x, then downsampled: antialiased edges
_MIN_SIZE, _MAX_SIZE = 10.0, 24.0  # the shape's extent in pixels (circle diameter, cross span)
_MIN_CONTRAST = 80.0  # least luminance difference (0..255) between background and shape
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luminance weights
_NOISE_STD = 6.0  # Gaussian pixel noise, in 0..255 units
_CROSS_HALF_WIDTH = 0.3  # a cross arm's half-thickness, relative to its half-length
# Independent random streams per use, so train, test and single PNGs never share images.
_STREAMS = {"train": 0, "test": 1, "png": 2}

Point = tuple[float, float]


def _rng(stream: str, seed: int) -> np.random.Generator:
    if seed < 0:
        raise ValueError(f"seed must be >= 0. Received: seed={seed}")
    return np.random.default_rng([seed, _STREAMS[stream]])


def _colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A random darker background colour and a random shape colour clearly lighter than it
    (hues are free; the polarity is fixed, so the outline, not the colour, tells the class)."""
    while True:
        background = rng.integers(0, 160, size=3)
        shape = rng.integers(60, 256, size=3)
        if float(_LUMA @ (shape - background)) >= _MIN_CONTRAST:
            bg = (int(background[0]), int(background[1]), int(background[2]))
            fg = (int(shape[0]), int(shape[1]), int(shape[2]))
            return bg, fg


def _outline(class_name: str, size: float) -> list[Point]:
    """The polygon of a square, triangle or cross of extent `size`, centred on the origin."""
    if class_name == "square":
        h = 0.4 * size  # side 0.8 x size; diagonal 1.13 x size
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    if class_name == "triangle":
        r = 0.6 * size  # circumradius of an equilateral triangle
        return [
            (r * math.cos(a), r * math.sin(a))
            for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))
        ]
    if class_name == "cross":
        a, t = size / 2, _CROSS_HALF_WIDTH * size / 2
        return [
            (t, a), (t, t), (a, t), (a, -t), (t, -t), (t, -a),
            (-t, -a), (-t, -t), (-a, -t), (-a, t), (-t, t), (-t, a),
        ]  # fmt: skip
    raise ValueError(f"class_name must be one of {', '.join(CLASS_NAMES)}: {class_name!r}")


def _render(class_name: str, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """One IMAGE_SIZE x IMAGE_SIZE x 3 uint8 image of `class_name`, drawn with `rng`."""
    if class_name not in CLASS_NAMES:
        raise ValueError(f"class_name must be one of {', '.join(CLASS_NAMES)}: {class_name!r}")
    background, colour = _colours(rng)
    size = rng.uniform(_MIN_SIZE, _MAX_SIZE)
    # Keep the centre at least half the extent from each edge: only rotated corners may clip.
    cx, cy = rng.uniform(size / 2, IMAGE_SIZE - size / 2, size=2)
    angle = rng.uniform(0.0, 2 * math.pi)

    big = IMAGE_SIZE * _SCALE
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    if class_name == "circle":
        r = size / 2 * _SCALE
        x, y = cx * _SCALE, cy * _SCALE
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    else:
        cos, sin = math.cos(angle), math.sin(angle)
        points = [
            ((cx + px * cos - py * sin) * _SCALE, (cy + px * sin + py * cos) * _SCALE)
            for px, py in _outline(class_name, size)
        ]
        draw.polygon(points, fill=colour)
    small = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)

    pixels = np.asarray(small, dtype=np.float32)
    pixels += rng.normal(0.0, _NOISE_STD, size=pixels.shape).astype(np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _split(
    per_class: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """`per_class` images of each class, shuffled, and their labels."""
    labels = rng.permutation(np.repeat(np.arange(len(CLASS_NAMES), dtype=np.uint8), per_class))
    images = np.stack([_render(CLASS_NAMES[label], rng) for label in labels])
    return images, labels


def make_shapes(
    *, train_per_class: int = 500, test_per_class: int = 100, seed: int = 0
) -> dict[str, np.ndarray]:
    """The dataset as `x_train` (N, 32, 32, 3) uint8, `y_train` (N,) uint8 labels into
    CLASS_NAMES, `x_test`, `y_test` and `class_names`; shuffled and the same for the same seed."""
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1. Received: {name}={value}")
    x_train, y_train = _split(train_per_class, _rng("train", seed))
    x_test, y_test = _split(test_per_class, _rng("test", seed))
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "class_names": np.array(CLASS_NAMES),
    }


def save_shapes(path: str | Path, **kwargs: int) -> Path:
    """Write `make_shapes(**kwargs)` to `path` with `np.savez_compressed`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:  # an open file: savez would append ".npz" to a bare name
        arrays: dict[str, Any] = make_shapes(**kwargs)  # Any: savez also takes allow_pickle
        np.savez_compressed(file, **arrays)
    return path


def render_png(path: str | Path, class_name: str, *, seed: int) -> Path:
    """Render one image of `class_name` (the dataset's renderer, on a random stream of its own)
    and save it as a PNG at `path`, for trying `tuning predict`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_render(class_name, _rng("png", seed))).save(path, format="PNG")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: write the dataset, and with `--png-dir` one PNG per class."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.make_shapes", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("storage/data/shapes.npz"))
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png-dir", type=Path, help="also write <class>.png for each class here")
    args = parser.parse_args(argv)

    try:
        path = save_shapes(
            args.out,
            train_per_class=args.train_per_class,
            test_per_class=args.test_per_class,
            seed=args.seed,
        )
    except ValueError as error:
        parser.error(str(error))
    n_train = args.train_per_class * len(CLASS_NAMES)
    n_test = args.test_per_class * len(CLASS_NAMES)
    side = f"{IMAGE_SIZE}x{IMAGE_SIZE}x3"
    written = f"wrote {path}: x_train {n_train}x{side}, x_test {n_test}x{side}"
    if args.png_dir is not None:
        # PNGs come from their own random stream: none repeats a dataset image.
        for index, name in enumerate(CLASS_NAMES):
            render_png(args.png_dir / f"{name}.png", name, seed=args.seed + index)
        written += f", and {len(CLASS_NAMES)} PNGs in {args.png_dir}"
    print(f"{written}; classes {', '.join(CLASS_NAMES)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
