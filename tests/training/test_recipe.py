"""The one training recipe: what each of its hyperparameters changes, and its augmenter."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import pytest

from tuning.training.batches import augment_batch, make_dataset
from tuning.training.divergence import DivergenceGuard
from tuning.training.recipe import Recipe, learning_rate, train
from tuning.typed_json import RecordError, from_json

BASE = Recipe(epochs=2, batch_size=32, schedule="constant", rotation=0, shift=0, zoom=0)


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def digits(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    y = (np.arange(n) % 10).astype(np.uint8)
    x = np.zeros((n, 28, 28, 1), np.uint8)
    x[np.arange(n), 4 + 2 * y, 8:20, 0] = 255
    return x, y


def trained_weights(recipe: Recipe) -> np.ndarray:
    x, y = digits()
    model = tiny_model()
    train(model, recipe, x, y, seed=1)
    return np.concatenate([np.ravel(w) for w in model.get_weights()])


@pytest.mark.parametrize(
    "change",
    [
        {"label_smoothing": 0.1},
        {"weight_decay": 0.05},
        {"schedule": "cosine"},
        {"schedule": "warmup_cosine"},
        {"rotation": 15},
        {"shift": 0.1},
        {"zoom": 0.1},
        {"learning_rate": 3e-3},
        {"optimizer": "sgd"},
        {"batch_size": 16},
        {"epochs": 3},
    ],
)
def test_each_recipe_hyperparameter_changes_what_is_trained(change: dict[str, object]) -> None:
    reference = trained_weights(BASE)
    np.testing.assert_allclose(trained_weights(BASE), reference, rtol=1e-6, atol=1e-7)
    changed = trained_weights(dataclasses.replace(BASE, **change))  # type: ignore[arg-type]
    assert np.abs(changed - reference).max() > 1e-6  # 10x what a rerun differs by


def test_schedules_span_exactly_the_run() -> None:
    steps = 10
    total = 2 * steps
    assert learning_rate(BASE, steps_per_epoch=steps) == BASE.learning_rate
    cosine = learning_rate(dataclasses.replace(BASE, schedule="cosine"), steps_per_epoch=steps)
    assert float(cosine(0)) == pytest.approx(1e-3)
    assert float(cosine(total // 2)) == pytest.approx(5e-4)
    assert float(cosine(total)) == pytest.approx(0.0, abs=1e-9)
    warm = learning_rate(dataclasses.replace(BASE, schedule="warmup_cosine"), steps_per_epoch=steps)
    assert float(warm(0)) == pytest.approx(1e-4)  # a tenth of the rate ...
    assert float(warm(2)) == pytest.approx(1e-3)  # ... up to the rate after a tenth of the steps
    assert float(warm(total)) == pytest.approx(0.0, abs=1e-9)


def test_the_augmenter_keeps_images_whole_and_only_moves_them() -> None:
    x, _ = digits(8)
    images = x.astype("float32")
    key = [3, 4]
    still = augment_batch(images, dataclasses.replace(BASE), key)
    np.testing.assert_allclose(np.asarray(still), images, atol=1e-3)
    moved = np.asarray(augment_batch(images, Recipe(rotation=15, shift=0.1, zoom=0.1), key))
    assert moved.shape == images.shape and moved.min() >= 0 and moved.max() <= 255.5
    assert np.abs(moved - images).max() > 100  # strokes moved
    ink = moved.sum(axis=(1, 2, 3)) / images.sum(axis=(1, 2, 3))
    assert np.all((ink > 0.6) & (ink < 1.5))  # within zoom 0.1: no stroke lost or smeared
    again = np.asarray(augment_batch(images, Recipe(rotation=15, shift=0.1, zoom=0.1), key))
    np.testing.assert_array_equal(moved, again)  # the same key, the same warp


def test_evaluation_batches_are_in_order_and_untouched() -> None:
    x, y = digits(40)
    batches = list(make_dataset(x, y, num_classes=10, batch_size=16))
    images = np.concatenate([np.asarray(b[0]) for b in batches])
    labels = np.concatenate([np.asarray(b[1]) for b in batches])
    np.testing.assert_array_equal(images, x.astype("float32"))
    np.testing.assert_array_equal(labels.argmax(axis=1), y)


def test_scaled_changes_only_the_epochs() -> None:
    recipe = Recipe(epochs=15)
    assert recipe.scaled(0.34).epochs == 5 and recipe.scaled(0.01).epochs == 1
    assert dataclasses.replace(recipe.scaled(2), epochs=15) == recipe
    with pytest.raises(ValueError, match="epoch_scale must be > 0"):
        recipe.scaled(0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schedule", "linear"),
        ("optimizer", "adamw"),
        ("epochs", 0),
        ("epochs", True),  # a flag is never a count
        ("learning_rate", "1e-3"),
        ("label_smoothing", 1.0),
        ("rotation", -5),
    ],
)
def test_bad_recipe_values_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        Recipe(**{field: value})  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"'Recipe.{field}' must be ") and "\n" not in message
    assert message.endswith(f". Received: {value!r}")


def test_a_stored_recipe_is_read_by_the_same_rules() -> None:
    """A recipe in a card or member record: the bad value is named by its dotted field."""
    assert from_json(Recipe, {"epochs": 3, "rotation": 5}) == Recipe(epochs=3, rotation=5.0)
    with pytest.raises(RecordError) as info:
        from_json(Recipe, {"epochs": 3, "zoom": 1}, field="training.recipe")
    assert str(info.value) == "'training.recipe.zoom' must be a fraction in [0, 1). Received: 1"


def test_a_run_has_one_divergence_guard_whoever_passes_it() -> None:
    """The recipe guards every run; a caller's own guard (cv's, naming the fold) replaces it."""
    x, y = digits(32)
    for given, where in (([], ""), ([DivergenceGuard("fold 1, ")], "fold 1, ")):
        model = tiny_model()
        passed: list[keras.callbacks.Callback] = []
        fit = model.fit

        def spy(*args: Any, fit: Any = fit, passed: list[Any] = passed, **kwargs: Any) -> Any:
            passed.extend(kwargs["callbacks"])
            return fit(*args, **kwargs)

        model.fit = spy
        train(model, dataclasses.replace(BASE, epochs=1), x, y, callbacks=list(given))
        guards = [c for c in passed if isinstance(c, DivergenceGuard)]
        assert [g.where for g in guards] == [where]
