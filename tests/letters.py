"""Synthetic handwritten-looking Greek letters for tests: glyphs from matplotlib's DejaVu Sans
(which has Greek), jittered in size, angle, place and stroke, dark ink on uneven grey paper,
like the photos in ../shared/data/greek (which tests never read)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
# By Unicode name (the letters themselves look like Latin ones to linters); Unicode spells
# lambda "LAMDA".
GLYPHS = {
    name: unicodedata.lookup(f"GREEK SMALL LETTER {name.upper().replace('LAMBDA', 'LAMDA')}")
    for name in ("alpha", "beta", "gamma", "delta", "epsilon", "lambda")
}


def letter(name: str, rng: np.random.Generator, *, side: int = 128) -> Image.Image:
    """One grayscale ("L") photo-like image of the letter `name`."""
    font = ImageFont.truetype(str(FONT), size=int(rng.integers(60, 84)))
    glyph = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(glyph)
    x, y = rng.integers(side // 5, side // 3, size=2)
    draw.text((int(x), int(y) - 10), GLYPHS[name], fill=255, font=font)
    glyph = glyph.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        glyph = glyph.filter(ImageFilter.MaxFilter(3))  # a thicker pen
    ink = np.asarray(glyph, dtype=np.float64) / 255.0
    # Paper: light grey with a lighting gradient and grain; ink: dark grey.
    ramp = np.linspace(0, 1, side)
    paper = 200 + 25 * np.add.outer(ramp, ramp) / 2 + rng.normal(0, 3, (side, side))
    pixels = paper * (1 - ink) + 45 * ink
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def as_mode(image: Image.Image, mode: str) -> Image.Image:
    """The same picture as grayscale ("L"), "RGB", "RGBA" or 16-bit ("I;16")."""
    if mode == "I;16":
        return Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
    return image.convert(mode)


def write_letters(
    root: Path,
    names: list[str],
    per_class: int,
    *,
    seed: int = 0,
    modes: tuple[str, ...] = ("L",),
) -> Path:
    """An image folder `root/<name>/<name>_NNN.png`, cycling through `modes`."""
    rng = np.random.default_rng(seed)
    for name in names:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = as_mode(letter(name, rng), modes[i % len(modes)])
            image.save(folder / f"{name}_{i:03d}.png")
    return root
