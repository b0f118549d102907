from __future__ import annotations

import gc
import weakref

import keras
import numpy as np
import pytest

from tuning.errors import TrainingDivergedError
from tuning.training.cv import cross_validate, fold_indices


def tiny_model(scale: float = 1 / 255) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(scale),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def labels(n: int = 200) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


def test_folds_partition_the_data_stratified_and_repeatably() -> None:
    y = labels(200)
    folds = fold_indices(y, folds=4, seed=7)
    assert len(folds) == 4
    held_out = np.concatenate([val for _, val in folds])
    assert sorted(held_out) == list(range(200))  # every image is validated exactly once
    for train, val in folds:
        assert not set(train) & set(val)
        assert set(np.bincount(y[val])) == {5}  # 20 per class / 4 folds
    again = fold_indices(y, folds=4, seed=7)
    other = fold_indices(y, folds=4, seed=8)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))


def test_cross_validate_scores_every_fold_and_reports_progress(
    mnist_npz: object,
) -> None:
    rng = np.random.default_rng(0)
    y = labels(300)
    x = rng.integers(0, 40, size=(300, 28, 28, 1)).astype(np.uint8)
    x[np.arange(300), 2 * y, :, 0] = 255  # a bright row per class: learnable in 2 epochs
    epochs: list[tuple[int, int]] = []
    folds: list[tuple[int, float]] = []
    result = cross_validate(
        tiny_model,
        x,
        y,
        folds=3,
        seed=0,
        fit=lambda model, xs, ys, **kw: model.fit(xs, ys, epochs=2, batch_size=32, **kw),
        on_epoch=lambda fold, epoch, acc: epochs.append((fold, epoch)),
        on_fold=lambda fold, acc: folds.append((fold, acc)),
    )
    assert epochs == [(f, e) for f in range(3) for e in range(2)]
    assert [f for f, _ in folds] == [0, 1, 2]
    assert result.fold_accuracies == [acc for _, acc in folds]
    assert result.mean == pytest.approx(np.mean(result.fold_accuracies))
    assert result.mean > 0.5  # well above chance (0.1)
    assert result.param_count == 7850 and result.train_seconds > 0
    assert [len(h["val_accuracy"]) for h in result.histories] == [2, 2, 2]


def test_nan_loss_raises_training_diverged() -> None:
    x = np.ones((40, 28, 28, 1), np.uint8)
    with pytest.raises(TrainingDivergedError, match="loss became nan in fold 0, epoch 1"):
        cross_validate(lambda: tiny_model(scale=float("inf")), x, labels(40), folds=2, seed=0)


def test_an_exception_from_a_hook_stops_the_run() -> None:
    class Stop(Exception):
        pass

    def stop(fold: int, epoch: int, acc: float) -> None:
        raise Stop

    x = np.zeros((40, 28, 28, 1), np.uint8)
    with pytest.raises(Stop):
        cross_validate(tiny_model, x, labels(40), folds=2, seed=0, on_epoch=stop)


def test_each_folds_model_is_freed_although_long_lived_objects_are_frozen() -> None:
    # cross_validate freezes what exists before it (TensorFlow's modules) to make collections
    # cheap; the models it builds must still be collected, or every trial would leak its nets.
    models: list[weakref.ref[keras.Model]] = []

    def build() -> keras.Model:
        model = tiny_model()
        models.append(weakref.ref(model))
        return model

    x = np.random.default_rng(0).integers(0, 255, (40, 28, 28, 1)).astype(np.uint8)
    gc.unfreeze()  # tests/conftest.py freezes before every test; here cross_validate must
    cross_validate(build, x, labels(40), folds=2, seed=0)
    assert gc.get_freeze_count() > 0
    assert len(models) == 2 and all(ref() is None for ref in models)
