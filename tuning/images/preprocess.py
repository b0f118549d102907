"""Turn an arbitrary picture of one handwritten character into an MNIST-like 28x28 image.

MNIST's own recipe, made robust to photos: grayscale; light ink on a dark background (inverted
when needed); uneven lighting removed; cropped to the ink; strokes thickened when they would end
up thinner than MNIST's; fitted into a 20x20 box keeping the aspect ratio; centred by mass in
28x28. Used by `tuning predict` and by anything that feeds real pictures to a trained model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from tuning.errors import ImageError

# Photos larger than this are reduced first; nothing finer than it survives the 20x20 box anyway.
WORK_SIDE = 512
# Strokes are measured and thickened at 4x the box size, where even thin ones are still whole.
STROKE_SCALE = 4
# Stroke widths (px, final image) measured on MNIST: median 1.9, 10th percentile 1.35. Thinner
# strokes are dilated to the median, so a fine-pen drawing looks like MNIST and MNIST stays as is.
TARGET_STROKE_PX = 1.9
MIN_STROKE_PX = 1.35
# Ink blobs smaller than this fraction of the largest one are specks of dust or paper grain.
MIN_BLOB_FRACTION = 0.05

# How a picture becomes a model's input, as model cards record it (`input.preprocess`).
CHARACTERS = "tuning.images.preprocess.prepare_image"  # made MNIST-like
RESIZE = "resize"  # resized, colours kept


def read_image(path: str | Path) -> Image.Image:
    """Open an image file (PNG, JPEG, ...), applying its EXIF orientation.

    Raises:
        ImageError: the file is missing, not an image, or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image; expected a PNG or JPEG file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: cannot read the image ({exc})") from None


def resize_image(
    image: Image.Image | str | Path, *, height: int, width: int, channels: int
) -> np.ndarray:
    """A picture as it is, colours kept: resized to `(height, width, channels)` uint8, for models
    trained on images that are not characters (a `.npz` of photos, say)."""
    picture = read_image(image) if isinstance(image, str | Path) else image
    mode = "RGB" if channels == 3 else "L"
    array = np.asarray(
        picture.convert(mode).resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8
    )
    return array.reshape(height, width, channels)


def prepare_image(
    image: Image.Image | np.ndarray | str | Path,
    *,
    size: int = 28,
    box: int = 20,
) -> np.ndarray:
    """An MNIST-like `(size, size)` uint8 image: light ink (up to 255) on black, centred by mass.

    Accepts a path, a PIL image of any mode (grayscale, RGB, RGBA, palette, 16-bit) or a 2-D/3-D
    array; dark-on-light and light-on-dark both work, as do uneven photos of ink on paper.

    Raises:
        ImageError: the file cannot be read, the array has the wrong shape, or no ink is found.
    """
    source = str(image) if isinstance(image, str | Path) else "image"
    if isinstance(image, str | Path):
        image = read_image(image)
    if not 0 < box <= size:
        raise ValueError(f"box must be in 1..size ({size}). Received: {box}")
    gray = grayscale(image, source=source)
    ink = ink_layer(gray)
    ink = _drop_specks(ink, source=source)
    glyph = _fit_into_box(_crop_to_ink(ink), box)
    return _centre_by_mass(glyph, size)


def grayscale(image: Image.Image | np.ndarray, *, source: str = "image") -> np.ndarray:
    """Luminance as float64 in 0..1 (dark is 0), at most WORK_SIDE pixels on a side.

    Transparent pixels are laid on whichever background, white or black, contrasts with the
    opaque ones, so a drawing on a transparent canvas keeps its strokes.
    """
    if isinstance(image, np.ndarray):
        image = _array_to_image(image, source=source)
    if max(image.size) > WORK_SIDE:
        image = image.copy()
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float images: the scale does not matter, contrast is stretched below.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    if image.mode == "P" or "A" in image.getbands() or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
        alpha = rgba[..., 3]
        luma = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        opaque = alpha > 0.5
        ink_is_light = opaque.any() and float(luma[opaque].mean()) > 0.5
        background = 0.0 if ink_is_light else 1.0
        return alpha * luma + (1.0 - alpha) * background
    return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


def _array_to_image(array: np.ndarray, *, source: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.size == 0:
        raise ImageError(f"{source}: the image is empty (0 pixels)")
    if array.ndim == 2:
        return Image.fromarray(array.astype(np.float32), mode="F")
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        if array.dtype != np.uint8:
            high = 65535.0 if array.max() > 255 else (1.0 if array.max() <= 1.0 else 255.0)
            array = np.clip(array / high * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="RGB" if array.shape[-1] == 3 else "RGBA")
    raise ImageError(
        f"{source}: expected an image array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). "
        f"Received: {array.shape}"
    )


def ink_layer(gray: np.ndarray) -> np.ndarray:
    """Ink as light-on-dark in 0..1 with the background at 0, whatever the input polarity."""
    if gray.size == 0:
        return gray
    # The background is what the border mostly shows; MNIST wants it dark.
    edge = max(1, round(0.05 * min(gray.shape)))
    border = np.concatenate(
        [gray[:edge].ravel(), gray[-edge:].ravel(), gray[:, :edge].ravel(), gray[:, -edge:].ravel()]
    )
    if np.median(border) > (gray.min() + gray.max()) / 2:
        gray = 1.0 - gray
    # A grey opening wider than any stroke keeps only the (unevenly lit) paper; subtract it.
    window = max(3, max(gray.shape) // 3)
    ink = np.clip(gray - ndimage.grey_opening(gray, size=(window, window)), 0.0, None)
    peak = float(ink.max())
    return ink / peak if peak > 1e-3 else np.zeros_like(ink)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold in 0..1 that best splits `values` into two classes (Otsu's method)."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(hist * centres)
    mean_low = mass_low / np.maximum(weight_low, 1)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _drop_specks(ink: np.ndarray, *, source: str) -> np.ndarray:
    """Zero the faint background and ink blobs too small to be part of the character."""
    if ink.size == 0 or float(ink.max()) <= 0.0:
        raise ImageError(
            f"{source}: no ink found; expected one dark character on a light "
            "background or a light one on a dark background"
        )
    threshold = otsu_threshold(ink)
    mask = ink > threshold
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    areas = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    keep = np.flatnonzero(areas >= MIN_BLOB_FRACTION * areas.max()) + 1
    kept = ndimage.binary_dilation(np.isin(labels, keep), iterations=1)
    # Soft edge: values between half the threshold and the ink stay grey, like MNIST's
    # anti-aliasing; below that is background.
    floor = threshold / 2
    soft = np.clip((ink - floor) / max(1.0 - floor, 1e-6), 0.0, 1.0)
    return np.where(kept, soft, 0.0)


def _crop_to_ink(ink: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _resize(values: np.ndarray, height: int, width: int) -> np.ndarray:
    image = Image.fromarray(values.astype(np.float32), mode="F")
    resized = image.resize((max(1, width), max(1, height)), Image.Resampling.LANCZOS)
    out = np.clip(np.asarray(resized, dtype=np.float64), 0.0, None)
    peak = float(out.max())
    return out / peak if peak > 0 else out


def _scaled_shape(shape: tuple[int, ...], longest: int) -> tuple[int, int]:
    height, width = shape[:2]
    scale = longest / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def stroke_width(ink: np.ndarray) -> float:
    """Typical stroke width in pixels, from the distance of ink pixels to the background.

    Across a stroke `w` pixels wide the distances are 1, 2, ..., w/2, ..., 2, 1 (mean w/4 + 1/2).
    """
    mask = ink > 0.5
    if not mask.any():
        return 0.0
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return max(1.0, 4.0 * float(distance[mask].mean()) - 2.0)


def _fit_into_box(crop: np.ndarray, box: int) -> np.ndarray:
    """Scale the longer side to `box`, thickening strokes that would end up thinner than MNIST's."""
    work = _resize(crop, *_scaled_shape(crop.shape, STROKE_SCALE * box))
    width = stroke_width(work) / STROKE_SCALE
    if width < MIN_STROKE_PX:
        radius = int(np.ceil((TARGET_STROKE_PX - width) * STROKE_SCALE / 2))
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        work = ndimage.grey_dilation(work, footprint=xx**2 + yy**2 <= radius**2)
    return _resize(work, *_scaled_shape(work.shape, box))


def _centre_by_mass(glyph: np.ndarray, size: int) -> np.ndarray:
    """Paste `glyph` into a `size`x`size` frame with its centre of mass at pixel (size/2, size/2),
    where MNIST has it (14, 14)."""
    height, width = glyph.shape
    cy, cx = ndimage.center_of_mass(glyph)
    top = int(np.clip(round(size / 2 - cy), 0, size - height))
    left = int(np.clip(round(size / 2 - cx), 0, size - width))
    frame = np.zeros((size, size), dtype=np.float64)
    frame[top : top + height, left : left + width] = glyph
    return np.round(frame * 255.0).astype(np.uint8)
