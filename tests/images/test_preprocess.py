"""MNIST-like preprocessing of arbitrary pictures: polarity, modes, size, position, lighting."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from tuning.errors import ImageError
from tuning.images.preprocess import prepare_image, read_image

REAL_MNIST = Path(os.environ.get("TUNING_MNIST", "/nonexistent")).is_file()


def draw_seven(
    size: tuple[int, int] = (300, 220),
    *,
    at: tuple[int, int] = (60, 30),
    scale: float = 1.0,
    width: int = 14,
    ink: int = 20,
    paper: int = 235,
) -> Image.Image:
    """A dark '7' on light paper, somewhere inside a larger canvas."""
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    x, y = at
    s = scale
    draw.line([(x, y), (x + 100 * s, y), (x + 40 * s, y + 150 * s)], fill=ink, width=width)
    return image


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_output_is_mnist_like_light_on_dark_fitted_and_centred_by_mass() -> None:
    out = prepare_image(draw_seven())
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255
    # Background is black, like MNIST (corners far from the ink).
    assert out[0, 0] == out[-1, -1] == 0
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == 20
    cy, cx = ndimage.center_of_mass(out.astype(float))
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_polarity_position_and_size_do_not_change_the_result() -> None:
    reference = prepare_image(draw_seven())
    inverted = Image.fromarray(255 - np.asarray(draw_seven()))
    off_centre_small = draw_seven((500, 400), at=(330, 210), scale=0.6, width=9)
    assert correlation(prepare_image(inverted), reference) > 0.99
    assert correlation(prepare_image(off_centre_small), reference) > 0.85


def test_aspect_ratio_is_kept() -> None:
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).rectangle([90, 20, 110, 180], fill=0)  # a tall bar, like a '1'
    out = prepare_image(image)
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert height == 20 and width <= 5


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16", "LA", "JPEG"])
def test_every_image_mode_and_format_gives_the_same_digit(mode: str, tmp_path: Path) -> None:
    gray = draw_seven()
    reference = prepare_image(gray)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    elif mode == "RGBA":
        # Ink drawn on a transparent canvas: only alpha says where the strokes are.
        alpha = 255 - np.asarray(gray)
        rgba = np.zeros((*alpha.shape, 4), np.uint8)
        rgba[..., 3] = alpha
        image = Image.fromarray(rgba, mode="RGBA")
    elif mode == "JPEG":
        image = gray.convert("RGB")
    else:
        image = gray.convert(mode)
    suffix = ".jpg" if mode == "JPEG" else ".png"
    path = tmp_path / f"digit{suffix}"
    image.save(path)
    assert correlation(prepare_image(path), reference) > 0.97


def test_uneven_photo_of_grey_paper_is_cleaned() -> None:
    """Dark ink on light grey paper, lit from one side so strongly that the ink on the bright
    side is lighter than the paper on the dark side (no global threshold separates them)."""
    clean = draw_seven((130, 130), at=(25, 10), scale=0.6, width=6, ink=90, paper=200)
    rng = np.random.default_rng(0)
    gradient = np.linspace(-100, 30, 130)[None, :] + np.linspace(-10, 10, 130)[:, None]
    photo = np.asarray(clean, float) + gradient + rng.normal(0, 4, (130, 130))
    out = prepare_image(Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).convert("RGB"))
    assert correlation(out, prepare_image(clean)) > 0.9
    background = prepare_image(clean) == 0
    assert np.mean(out[background] > 30) < 0.03


def test_thin_strokes_are_thickened_towards_mnist_width() -> None:
    """A fine pen on a large photo must not shrink to a faint hairline."""
    thin = prepare_image(draw_seven((900, 900), at=(200, 100), scale=4.0, width=3))
    normal = prepare_image(draw_seven((900, 900), at=(200, 100), scale=4.0, width=60))
    # Bright-pixel area is a shift-proof measure of stroke width (same shape, same size).
    assert np.sum(thin > 127) >= 0.6 * np.sum(normal > 127)


@pytest.mark.skipif(not REAL_MNIST, reason="needs real digits: set TUNING_MNIST")
def test_a_real_mnist_digit_survives_re_rendering(mnist_npz: Path) -> None:
    with np.load(mnist_npz) as data:
        digits = data["x_test"][:20]
    scores = []
    for i, digit in enumerate(digits):
        big = Image.fromarray(255 - digit).resize((140, 140), Image.Resampling.BICUBIC)
        canvas = Image.new("L", (320, 260), 255)
        canvas.paste(big, (10 + 7 * i, 100 - 4 * i))
        scores.append(correlation(prepare_image(canvas), digit))
    assert np.median(scores) > 0.85


def test_arrays_are_accepted() -> None:
    reference = prepare_image(draw_seven())
    as_array = np.asarray(draw_seven())
    assert correlation(prepare_image(as_array), reference) > 0.99
    assert correlation(prepare_image(as_array[..., None]), reference) > 0.99
    with pytest.raises(ImageError, match=r"shape \(H, W\)"):
        prepare_image(np.zeros((2, 3, 4, 5)))


def test_blank_image_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(path)
    with pytest.raises(ImageError, match=r"blank\.png: no ink found"):
        prepare_image(path)


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    draw_seven().save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ImageError, match=r"notes\.png: not an image"):
        read_image(text)
    with pytest.raises(ImageError, match=r"cut\.png: cannot read the image"):
        read_image(truncated)
    with pytest.raises(ImageError, match=r"missing\.png: image not found"):
        read_image(tmp_path / "missing.png")
