"""Training batches on every Keras backend: which images, in what order, under which warp.

Every random choice (an epoch's order, each image's rotation, zoom and shift) is drawn by NumPy
from `(seed, epoch)`, so one seed gives the same batches and the same warps under TensorFlow,
JAX and PyTorch. The warp is `keras.ops.image.affine_transform`: one bilinear warp per image,
black fill. Under TensorFlow the batches come from a parallel, prefetched `tf.data` pipeline;
under the other backends from a `keras.utils.PyDataset` whose threads warp the next batches on
the CPU while the device trains.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Protocol

import keras
import numpy as np

from tuning.backend import host_function

# Threads that warp batches ahead of a GPU under JAX and PyTorch, at most. On a CPU they would
# only take cores from training (2 cores: the seed network 22% slower under PyTorch), so none.
LOADER_THREADS = 4
TRANSFORM_SIZE = 8  # a projective transform as affine_transform takes it: a0..a2, b0..b2, c0, c1


class Moves(Protocol):
    """The ranges random warps are drawn from. `tuning.training.recipe.Recipe` is one; it is
    named here only by its shape, so the recipe depends on the batches and not back."""

    @property
    def rotation(self) -> float: ...  # degrees, either way

    @property
    def shift(self) -> float: ...  # fraction of the image side, either way

    @property
    def zoom(self) -> float: ...  # fraction, in or out

    @property
    def augments(self) -> bool: ...  # whether any of the three moves


def warp_transforms(
    moves: Moves, count: int, *, height: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """`count` random warps within the ranges of `moves`, as (count, 8) float32 transforms that
    map each output pixel to the input pixel it samples (the inverse of the move), about the
    image's centre."""
    u = rng.uniform(-1.0, 1.0, size=(count, 4))
    angle = u[:, 0] * math.radians(moves.rotation)
    scale = 1.0 + u[:, 1] * moves.zoom
    tx, ty = u[:, 2] * moves.shift * width, u[:, 3] * moves.shift * height
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    cx, cy = (width - 1) / 2, (height - 1) / 2
    ox = cx - (cos * (cx + tx) + sin * (cy + ty))
    oy = cy - (-sin * (cx + tx) + cos * (cy + ty))
    zeros = np.zeros_like(cos)
    return np.stack([cos, sin, ox, -sin, cos, oy, zeros, zeros], axis=1).astype(np.float32)


def warp(images: Any, transforms: Any) -> Any:
    """An (N, H, W, C) float batch, each image warped by its row of `transforms`."""
    return keras.ops.image.affine_transform(images, transforms, fill_mode="constant")


def augment_batch(images: np.ndarray, moves: Moves, seed: int | Sequence[int]) -> np.ndarray:
    """Each image of an (N, H, W, C) float batch rotated, zoomed and shifted at random about its
    centre, within the ranges of `moves` (a `Recipe`); the same `seed` gives the same warps on
    every backend."""
    transforms = warp_transforms(
        moves,
        len(images),
        height=images.shape[1],
        width=images.shape[2],
        rng=np.random.default_rng(seed),
    )
    return keras.ops.convert_to_numpy(warp(np.asarray(images, np.float32), transforms))


class EpochDraws:
    """Each epoch's order of the `count` images and their warps, the k-th warp for the k-th
    image in that order (None: the recipe does not augment, or no recipe: evaluation, in
    order)."""

    def __init__(
        self, count: int, *, recipe: Moves | None, seed: int, height: int, width: int
    ) -> None:
        self.count, self.recipe, self.seed = count, recipe, seed
        self.height, self.width = height, width

    def __call__(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.recipe is None:
            return np.arange(self.count), None
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.count)
        if not self.recipe.augments:
            return order, None
        shape = {"height": self.height, "width": self.width}
        return order, warp_transforms(self.recipe, self.count, rng=rng, **shape)


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    batch_size: int,
    recipe: Moves | None = None,
    seed: int = 0,
) -> Any:
    """(image, one-hot label) float batches for `model.fit`: shuffled and augmented by `recipe`
    if given (training), in order and untouched otherwise (evaluation). A new epoch's draws are
    made each time the batches are iterated. A `tf.data.Dataset` under TensorFlow, else a
    `keras.utils.PyDataset`."""
    draws = EpochDraws(len(y), recipe=recipe, seed=seed, height=x.shape[1], width=x.shape[2])
    if keras.backend.backend() == "tensorflow":
        return _tf_dataset(x, y, draws, num_classes=num_classes, batch_size=batch_size)
    return Batches(x, y, draws, num_classes=num_classes, batch_size=batch_size)


def loader_threads() -> int:
    """Threads to prepare batches with: none on a CPU, up to `LOADER_THREADS` beside a GPU."""
    from tuning.device import detect

    device = detect()
    return min(LOADER_THREADS, max(1, device.cpu_cores // 2)) if device.gpus else 0


class Batches(keras.utils.PyDataset):
    """The batches of one epoch after another, for backends without `tf.data`; a new epoch's
    draws at the start of each epoch (Keras calls `on_epoch_begin`)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        draws: EpochDraws,
        *,
        num_classes: int,
        batch_size: int,
        workers: int | None = None,
    ) -> None:
        workers = loader_threads() if workers is None else workers
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=16)
        self.x, self.y, self.draws = x, y, draws
        self.num_classes, self.batch_size = num_classes, batch_size
        self.epoch = -1
        self._order, self._transforms = draws(0)
        self._warp = host_function(warp)

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def on_epoch_begin(self) -> None:
        self.epoch += 1
        self._order, self._transforms = self.draws(self.epoch)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        batch = slice(index * self.batch_size, (index + 1) * self.batch_size)
        rows = self._order[batch]
        images = self.x[rows].astype(np.float32)
        if self._transforms is not None:  # on the CPU: the device is for training
            images = self._warp(images, self._transforms[batch])
        return images, np.eye(self.num_classes, dtype=np.float32)[self.y[rows]]


def _tf_dataset(
    x: np.ndarray, y: np.ndarray, draws: EpochDraws, *, num_classes: int, batch_size: int
) -> Any:
    import tensorflow as tf

    epochs = itertools.count()

    def next_epoch() -> tuple[np.ndarray, np.ndarray]:
        order, transforms = draws(next(epochs))
        if transforms is None:  # a placeholder of the right type, never used
            transforms = np.zeros((len(order), TRANSFORM_SIZE), np.float32)
        return order.astype(np.int64), transforms

    @tf.autograph.experimental.do_not_convert  # see `prepare`
    def one_epoch(_: Any) -> Any:
        order, transforms = tf.numpy_function(next_epoch, [], (tf.int64, tf.float32), stateful=True)
        order.set_shape([len(y)])
        transforms.set_shape([len(y), TRANSFORM_SIZE])
        return tf.data.Dataset.from_tensor_slices((order, transforms)).batch(batch_size)

    images, labels = tf.constant(x), tf.constant(y)  # uint8 stays uint8 until batched
    warped = draws.recipe is not None and draws.recipe.augments

    # Plain tensor code: no AutoGraph conversion (which leaves generated files in $TMPDIR).
    @tf.autograph.experimental.do_not_convert
    def prepare(rows: Any, transforms: Any) -> Any:
        batch = tf.cast(tf.gather(images, rows), tf.float32)
        if warped:
            batch = warp(batch, transforms)
        return batch, tf.one_hot(tf.gather(labels, rows), num_classes)

    steps = math.ceil(len(y) / batch_size)
    data = tf.data.Dataset.range(1).flat_map(one_epoch)
    data = data.apply(tf.data.experimental.assert_cardinality(steps))
    return data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
