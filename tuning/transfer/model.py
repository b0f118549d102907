"""Transfer learning from an exported MNIST network: verify the file, freeze it, put a new N-way
softmax on its features, train that head, optionally fine-tune the top of the network.

Knows nothing of Optuna or of the output folder: `tuning.transfer.run` drives it. Inputs are
`tuning.images.folder` images, (N, 28, 28) uint8 light-on-dark, what the MNIST network expects.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tuning.errors import ModelError
from tuning.images.mnist import file_sha256
from tuning.memory import release_memory
from tuning.model.card import CARD_FILE, ExportCard, ModelCard
from tuning.model.ensemble import ensemble_members
from tuning.model.file import load_model_file
from tuning.training.batches import augment_batch
from tuning.training.cv import fold_indices
from tuning.training.divergence import DivergenceGuard
from tuning.training.recipe import Recipe

BATCH_SIZE = 8
MEMBER_CHOICES = ("best", "all")  # what a transfer freezes of an ensemble
# Fine-tuning the unfrozen top runs at this fraction of the head's learning rate, for half the
# head's epochs: large steps would wash out the MNIST features that 9 images a class cannot
# re-learn.
FINE_TUNE_RATE = 0.1
FINE_TUNE_EPOCH_RATIO = 0.5
# Augmentation at strength 1: rotation up to ±12°, scale ±12%, shift ±2.5 px (of 28). Handwriting
# of one writer varies about that much; more would turn a gamma into a lambda. The search never
# turns it off (strength >= 0.25): CV folds drawn from the same few writers cannot show what it
# buys on letters written by others, and those are what the model is for.
MAX_ROTATION_DEG = 12.0
MAX_SCALE = 0.12
MAX_SHIFT_PX = 2.5


@dataclass(frozen=True)
class BaseModel:
    """An exported model whose file matches the sha256 on its card, loaded and kept in memory."""

    path: Path
    sha256: str
    card: ModelCard
    config: dict[str, Any]
    weights: list[np.ndarray]
    members: str | None = None  # an ensemble's: what was frozen ("best" or "all" members)
    froze: str | None = None  # the same, in words

    @property
    def study(self) -> str | None:
        return self.card.study

    @property
    def trial(self) -> int | None:
        return self.card.trial


def load_base(path: str | Path, *, members: str = "best") -> BaseModel:
    """Load an exported model after checking its sha256 against `model_card.json` beside it.
    From an ensemble it takes, by `members`, the member with the fewest test errors on its
    card ("best"), or every member's features side by side under one new head ("all").

    Raises:
        ModelError: no card, no sha256 on it, a mismatch (the file changed since export), the
            model cannot be loaded safely, or its last layer is not a Dense softmax to replace.
        ValueError: `members` is neither "best" nor "all".
    """
    if members not in MEMBER_CHOICES:
        raise ValueError(
            f"members must be one of {', '.join(MEMBER_CHOICES)}. Received: {members!r}"
        )
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found; run `tuning export` first")
    card_path = path.with_name(CARD_FILE)
    card = ModelCard.read(path)
    if card is None:
        raise ModelError(
            f"{path}: no {CARD_FILE} beside it; expected a model written by `tuning export`, "
            "whose card holds the sha256 checked before transfer"
        )
    expected = card.model_sha256
    if expected is None:
        raise ModelError(
            f"{card_path}: expected a 'sha256': {{'model': HEX}} field. "
            f"Received: {card.sha256!r:.80}"
        )
    actual = file_sha256(path)
    if actual != expected:
        raise ModelError(
            f"{path}: sha256 mismatch: its card {card_path} says {expected[:16]}…, the file has "
            f"{actual[:16]}…; the model was changed or replaced after export. Refused; export "
            "it again"
        )
    model = load_model_file(path)
    chosen, froze = None, None
    parts = ensemble_members(model)
    if parts:
        chosen = members
        model, froze = _from_ensemble(parts, card, members)
    try:
        last = model.layers[-1]
        if not isinstance(last, keras.layers.Dense) or len(model.inputs) != 1:
            raise ModelError(
                f"{path}: expected a single-input model ending in a Dense softmax layer to "
                f"replace. Received last layer: {type(last).__name__} {last.name!r}"
            )
        config = keras.saving.serialize_keras_object(model)
        return BaseModel(path, actual, card, config, model.get_weights(), chosen, froze)
    finally:
        release_memory()


def _from_ensemble(parts: list[keras.Model], card: ModelCard, members: str) -> tuple[Any, str]:
    """The network to transfer from an ensemble's members, and what was frozen, in words."""
    if members == "best":
        ensemble = card.ensemble if isinstance(card, ExportCard) else None
        scores = ensemble.scores if ensemble else []
        errors = [s.errors for s in scores if s.errors is not None]
        if len(errors) == len(parts):  # every member's errors known
            index = int(np.argmin(errors))
            return parts[index], (
                f"member {index + 1} of {len(parts)}, the one with the fewest test errors: "
                f"{errors[index]}"
            )
        return parts[0], f"member 1 of {len(parts)} (the card gives no member errors)"
    inputs = keras.Input(shape=parts[0].input_shape[1:], name="image")
    features = [
        keras.Model(part.input, part.layers[-1].input, name=f"member_{i}_features")(inputs)
        for i, part in enumerate(parts)
    ]
    joined = keras.layers.Concatenate(name="member_features")(features)
    # A placeholder for the head `build` puts in its place.
    outputs = keras.layers.Dense(parts[0].output_shape[-1], activation="softmax")(joined)
    width = int(joined.shape[-1])
    froze = f"the features of all {len(parts)} members side by side, {width} in all"
    return keras.Model(inputs, outputs, name="ensemble_features"), froze


def unfreeze_groups(model: keras.Model) -> list[list[str]]:
    """Trainable layer groups from the top: the dense layer(s) after the conv blocks, then each
    conv block (`block{b}_*`) from the last to the first. BatchNorm layers are never unfrozen:
    their statistics from 60,000 digits beat any from a few dozen letters. Whole networks
    nested inside (an ensemble's members) are never unfrozen either."""
    groups: list[list[str]] = []
    keys: list[str] = []
    for layer in model.layers[:-1]:
        frozen_kind = isinstance(layer, keras.layers.BatchNormalization | keras.Model)
        if not layer.weights or frozen_kind:
            continue
        match = re.match(r"(block\d+)_", layer.name)
        key = match.group(1) if match else layer.name
        if keys and keys[-1] == key:
            groups[-1].append(layer.name)
        else:
            keys.append(key)
            groups.append([layer.name])
    return groups[::-1]


def build(base: BaseModel, num_classes: int) -> keras.Model:
    """The base network, all frozen, with its last layer replaced by an N-way softmax."""
    # A fresh copy each time: fine-tuning changes the weights, and folds must not share them.
    # (deserialization consumes the dict it is given, hence the deep copy).
    original = keras.saving.deserialize_keras_object(copy.deepcopy(base.config), safe_mode=True)
    original.set_weights(base.weights)
    original.trainable = False
    features = original.layers[-1].input
    head = keras.layers.Dense(num_classes, activation="softmax", name="classifier")
    model = keras.Model(original.input, head(features), name="transfer")
    return model


def augment(x: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """A randomly rotated, scaled and shifted copy of each (28, 28) uint8 image (black fill),
    warped by the training recipe's augmenter at `strength` times the transfer's largest moves."""
    if strength <= 0:
        return x.copy()
    moves = Recipe(
        rotation=MAX_ROTATION_DEG * strength,
        shift=MAX_SHIFT_PX / x.shape[2] * strength,
        zoom=MAX_SCALE * strength,
    )
    warped = augment_batch(x[..., None].astype("float32"), moves, seed)
    return np.clip(np.round(warped[..., 0]), 0, 255).astype(x.dtype)


def _epochs_of(x: np.ndarray, y: np.ndarray, epochs: int, strength: float, seed: int) -> Any:
    """`epochs` freshly augmented, shuffled passes over (x, y), concatenated in order."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        xs.append(augment(x[order], strength, seed=seed * 1000 + epoch))
        ys.append(y[order])
    return np.concatenate(xs)[..., None].astype("float32"), np.concatenate(ys)


def _fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    rate: float,
    epochs: int,
    strength: float,
    seed: int,
) -> float:
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    xs, ys = _epochs_of(x, y, epochs, strength, seed)
    # One pass over the pre-augmented epochs: same steps as `epochs` epochs, one traced loop.
    history = model.fit(
        xs,
        ys,
        batch_size=BATCH_SIZE,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[DivergenceGuard("transfer training, ")],
    )
    return float(history.history["loss"][-1])


def train(
    base: BaseModel,
    x: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    *,
    num_classes: int,
    seed: int,
) -> keras.Model:
    """A transfer model trained on (x, y): the head for `epochs` at `learning_rate`, then, if
    `unfreeze` > 0, that many top layer groups with it at a tenth of the rate.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite.
    """
    keras.utils.set_random_seed(seed)
    model = build(base, num_classes)
    rate, epochs = float(params["learning_rate"]), int(params["epochs"])
    strength = float(params["augment"])
    _fit(model, x, y, rate=rate, epochs=epochs, strength=strength, seed=seed)
    depth = int(params["unfreeze"])
    if depth > 0:
        names = {n for group in unfreeze_groups(model)[:depth] for n in group}
        for layer in model.layers:
            if layer.name in names:
                layer.trainable = True
        fine_epochs = max(1, round(epochs * FINE_TUNE_EPOCH_RATIO))
        _fit(
            model,
            x,
            y,
            rate=rate * FINE_TUNE_RATE,
            epochs=fine_epochs,
            strength=strength,
            seed=seed + 1,
        )
    return model


def predict_proba(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Class probabilities for (N, 28, 28) images, as float64."""
    outputs = model(x[..., None].astype("float32"), training=False)
    return np.asarray(keras.ops.convert_to_numpy(outputs), dtype=np.float64)


def held_out_probabilities(
    base: BaseModel,
    x: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    *,
    num_classes: int,
    folds: int,
    seed: int,
) -> np.ndarray:
    """Out-of-fold class probabilities (N, C): each image scored by a model that never saw it."""
    probs = np.zeros((len(y), num_classes))
    for fold, (train_idx, held_idx) in enumerate(fold_indices(y, folds=folds, seed=seed)):
        try:
            model = train(
                base,
                x[train_idx],
                y[train_idx],
                params,
                num_classes=num_classes,
                seed=seed + 100 * fold,
            )
            probs[held_idx] = predict_proba(model, x[held_idx])
        finally:
            release_memory()
    return probs


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean cross-entropy of the true classes, -log p = log(1 + (other classes' mass) / p).

    Written so because confident float32 softmax outputs round p to exactly 1.0, where -log p
    is 0 for every confident configuration and the search could not tell them apart; the other
    classes' tiny probabilities still differ.
    """
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-12, None)
    others = np.where(np.eye(probs.shape[1], dtype=bool)[y], 0.0, probs).sum(axis=1)
    return float(np.mean(np.log1p(others / p_true)))
