"""Your own search space for `tuning`: a KerasTuner HyperModel, or a plain build function.

This is user code: `tuning` imports this module and runs it to build every trial's network. A
study file names what to use in its `[space]` table, either by a file path relative to the study
file or, when the module is importable (run from the repository root), by module name:

    [space]
    hypermodel = "../examples/hypermodels.py:SmallCNN"   # or "examples.hypermodels:SmallCNN"

`tuning` creates `SmallCNN(input_shape=..., num_classes=...)` from the data and calls `build(hp)`
with KerasTuner's `HyperParameters` or with an Optuna-backed object that answers `hp.Int`,
`hp.Float`, `hp.Choice` and `hp.Boolean`: use only those four, each with an explicit `default=`
(the defaults make the first, baseline trial), and no `hp.conditional_scope`; a parameter asked
for only in some branches is conditional anyway. `build` must return a compiled model; `tuning`
compiles it again with its own tuned training recipe (learning rate, schedule, augmentation,
epochs, batch size), so a HyperModel here only describes the network.

Use built-in Keras layers only: the exported `.keras` file is loaded with `safe_mode=True`, which
refuses custom layers and `Lambda` code.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner


def _compile(model: keras.Model) -> keras.Model:
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class SmallCNN(keras_tuner.HyperModel):
    """1-3 conv blocks (1-2 3x3 convs, optional batch norm, 2x2 max-pool; filters doubling per
    block) -> flatten or global average pooling -> dropout -> softmax, for images in 0..255.
    The defaults are the plain network one would write first (two blocks of one convolution,
    no batch norm, global average pooling): the study's baseline, trial 0."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__(name="small_cnn")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def build(self, hp: Any) -> keras.Model:
        """The compiled network for the hyperparameters `hp`."""
        blocks = hp.Int("blocks", 1, 3, default=2)
        filters = hp.Choice("filters", [16, 32, 64], default=32)
        convs = hp.Int("convs", 1, 2, default=1)
        batch_norm = hp.Boolean("batch_norm", default=False)
        head = hp.Choice("head", ["flatten", "gap"], default="gap")
        dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.2)

        inputs = keras.Input(shape=self.input_shape, name="image")
        x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)
        for block in range(blocks):
            for conv in range(convs):
                x = keras.layers.Conv2D(
                    filters * 2**block,
                    3,
                    padding="same",
                    use_bias=not batch_norm,
                    name=f"block{block}_conv{conv}",
                )(x)
                if batch_norm:
                    x = keras.layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
                x = keras.layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        if head == "gap":
            x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        else:
            x = keras.layers.Flatten(name="flatten")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        # A float32 softmax, whatever the dtype policy: low-precision probabilities hurt the loss.
        outputs = keras.layers.Dense(
            self.num_classes, activation="softmax", dtype="float32", name="classifier"
        )(x)
        return _compile(keras.Model(inputs, outputs, name="small_cnn"))


def build_mlp(hp: Any, *, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """A plain build function instead of a class (`hypermodel = "...hypermodels.py:build_mlp"`):
    a tiny MLP, rescale -> flatten -> dense -> softmax, compiled. `tuning` calls it as
    `build_mlp(hp, ...)` and passes `input_shape` and `num_classes` as keyword arguments when the
    function accepts them."""
    units = hp.Choice("units", [32, 64, 128], default=64)
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(units, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="classifier"
    )(x)
    return _compile(keras.Model(inputs, outputs, name="mlp"))
