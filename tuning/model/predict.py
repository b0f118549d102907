"""Classify pictures of single characters with an exported model (`tuning predict`): its
`.keras` file, or its `.onnx` or `.tflite` file run outside Keras, with the card beside it."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuning.errors import ModelError
from tuning.images.preprocess import prepare_image, resize_image
from tuning.model.card import ModelCard
from tuning.model.file import class_names, load_model_file
from tuning.model.runners import SUFFIXES, load_runner

TOP_K = 3


@dataclass(frozen=True)
class Prediction:
    """The most probable class of one image, and the runners-up."""

    image: str
    label: str
    index: int
    probability: float
    top: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _inputs(shape: tuple[Any, ...], images: Sequence[str | Path], path: Path) -> np.ndarray:
    """The images as the input batch of a model taking `shape`, prepared as its card says: like
    MNIST characters (the default for square grayscale models), or resized with their colours
    kept."""
    if len(shape) != 4 or shape[3] not in (1, 3) or not shape[1] or not shape[2]:
        raise ModelError(
            f"{path}: expected a model taking images (None, H, W, 1 or 3). "
            f"Received input shape: {shape}"
        )
    height, width, channels = (int(n) for n in shape[1:])
    card = ModelCard.read(path)
    resize = card.input.resizes if card else (height != width or channels != 1)
    if resize:
        return np.stack(
            [resize_image(i, height=height, width=width, channels=channels) for i in images]
        )
    if height != width or channels != 1:
        raise ModelError(
            f"{path}: character models take square grayscale images (None, S, S, 1). "
            f"Received input shape: {shape}"
        )
    box = round(height * 20 / 28)
    return np.stack([prepare_image(i, size=height, box=box) for i in images])[..., None]


def _keras_outputs(model_path: Path, images: Sequence[str | Path]) -> np.ndarray:
    import keras

    model = load_model_file(model_path)
    try:
        batch = _inputs(tuple(model.input_shape), images, model_path)
        return np.asarray(model.predict(batch, verbose=0), dtype=np.float64)
    finally:
        keras.backend.clear_session()
        gc.collect()


def _as_probabilities(outputs: np.ndarray) -> np.ndarray:
    # A model ending in logits rather than softmax still gets meaningful probabilities.
    if outputs.min() < 0 or not np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    return outputs


def predict_images(model_path: str | Path, images: Sequence[str | Path]) -> list[Prediction]:
    """Classify each image with the model at `model_path` (`.keras`, or `.onnx` / `.tflite` as
    an export writes them): pictures of characters are first made MNIST-like
    (`prepare_image`), other images resized to the model's input, as its card says.

    The labels are the `class_names` of `model_card.json` next to the model (digits by default).
    Every image is read before the model runs, so a bad one fails the call with its name.

    Raises:
        ModelError: the model cannot be loaded safely, or its inputs/outputs do not fit.
        ImageError: an image cannot be read or holds no ink.
    """
    model_path = Path(model_path)
    if model_path.suffix.lower() in SUFFIXES:
        runner = load_runner(model_path)
        batch = _inputs(runner.input_shape, images, model_path)
        outputs = np.asarray(runner(batch), dtype=np.float64)
    else:
        outputs = _keras_outputs(model_path, images)
    if outputs.ndim != 2:
        raise ModelError(f"{model_path}: expected one score per class. Received: {outputs.shape}")
    names = class_names(model_path, outputs.shape[1])
    probs = _as_probabilities(outputs)
    results = []
    for source, row in zip(images, probs, strict=True):
        order = np.argsort(row)[::-1][:TOP_K]
        top = [{"label": names[i], "index": int(i), "probability": float(row[i])} for i in order]
        best = int(order[0])
        results.append(Prediction(str(source), names[best], best, float(row[best]), top))
    return results


def format_predictions(predictions: list[Prediction]) -> str:
    """One line per image: path, predicted label, probability."""
    width = max(len(p.image) for p in predictions)
    return "\n".join(f"{p.image:<{width}}  {p.label}  {p.probability:.4f}" for p in predictions)
