"""The built-in search space, a KerasTuner HyperModel: the CNN here, its training recipe from
`tuning.study.recipe_hypermodel`, which every study's HyperModel shares.

`build(hp)` answers "what network to try" and `recipe(hp)` "how to train it"; both run unchanged
with KerasTuner's `HyperParameters` and with `tuning.hp.OptunaHyperParameters`. Every
hyperparameter defaults to the seed network of the student project
(Conv32-Pool-Conv64-Conv64-Pool-Dense100-Dense10, Adam, batch 32) with the recipe that
export used before recipes were tuned: 15 epochs, cosine decay, rotation 10, shift and zoom 0.1.
Also here: `describe_space` and `check_params`, which read any HyperModel's space.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt

from tuning.study.recipe_hypermodel import SEED_EPOCHS, RecipeHyperModel

MAX_CONV_BLOCKS = 3
# 8 and 32-unit heads reach down to networks of a few thousand parameters, for cost-bounded
# studies (`[objective]`); the seed network's 32/64/100 stay the defaults.
FILTERS = (8, 16, 32, 48, 64, 96, 128)
DENSE_UNITS = (32, 64, 100, 128, 256, 512)
# A "separable" block factorises each 3x3 or 5x5 conv into a depthwise conv and a 1x1 conv (about
# 8x fewer FLOPs at 64 channels); the network's first conv stays standard, as one input channel
# gives a depthwise conv nothing to factorise.
CONV_TYPES = ("standard", "separable")
DOWNSAMPLING = ("maxpool", "strided")  # 2x2 max-pool after a block, or its last conv at stride 2
HEADS = ("flatten", "gap")  # flatten the last feature map, or global average pooling

SEED_PARAMS: dict[str, Any] = {
    "conv_blocks": 2,
    "kernel_size": 3,
    "batch_norm": False,
    "conv_type": "standard",
    "downsample": "maxpool",
    "block_dropout": 0.0,
    "filters_0": 32,
    "convs_0": 1,
    "filters_1": 64,
    "convs_1": 2,
    "head": "flatten",
    "dense_units": 100,
    "dropout": 0.0,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "schedule": "cosine",
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "rotation": 10,
    "shift": 0.1,
    "zoom": 0.1,
    "batch_size": 32,
    "epochs": SEED_EPOCHS,
}


def seed_params(max_epochs: int) -> dict[str, Any]:
    """The seed network's parameters, with its 15 epochs capped at the study's `max_epochs`."""
    return {**SEED_PARAMS, "epochs": min(SEED_EPOCHS, max_epochs)}


class CNNHyperModel(RecipeHyperModel):
    """Conv blocks (1-2 standard or depthwise-separable convs, optional batch norm, max-pool or
    strided, optional dropout) -> flatten or global average pooling -> dense -> softmax, for
    28x28x1 images in 0..255."""

    baseline_label = "seed network"

    def _make_model(self, hp: Any) -> keras.Model:  # not `_build`: KerasTuner uses that name
        blocks = hp.Int("conv_blocks", 1, MAX_CONV_BLOCKS, default=SEED_PARAMS["conv_blocks"])
        kernel = hp.Choice("kernel_size", [3, 5], default=SEED_PARAMS["kernel_size"])
        batch_norm = hp.Boolean("batch_norm", default=SEED_PARAMS["batch_norm"])
        separable = hp.Choice("conv_type", list(CONV_TYPES), default="standard") == "separable"
        downsample = hp.Choice("downsample", list(DOWNSAMPLING), default="maxpool")
        block_dropout = hp.Float("block_dropout", 0.0, 0.4, step=0.1, default=0.0)

        inputs = keras.Input(shape=self.input_shape, name="image")
        x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)
        for block in range(blocks):
            # Seed defaults for blocks 0-1; a third block defaults to the second's shape.
            seed_block = min(block, 1)
            filters = hp.Choice(
                f"filters_{block}", list(FILTERS), default=SEED_PARAMS[f"filters_{seed_block}"]
            )
            convs = hp.Int(f"convs_{block}", 1, 2, default=SEED_PARAMS[f"convs_{seed_block}"])
            for conv in range(convs):
                strided = downsample == "strided" and conv == convs - 1
                layer = (
                    keras.layers.SeparableConv2D
                    if separable and (block, conv) != (0, 0)
                    else keras.layers.Conv2D
                )
                x = layer(
                    filters,
                    kernel,
                    strides=2 if strided else 1,
                    padding="same",
                    use_bias=not batch_norm,
                    **_initializers(layer),
                    name=f"block{block}_conv{conv}",
                )(x)
                if batch_norm:
                    x = keras.layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
                x = keras.layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
            if downsample == "maxpool":
                x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
            if block_dropout:
                x = keras.layers.Dropout(block_dropout, name=f"block{block}_dropout")(x)

        if hp.Choice("head", list(HEADS), default="flatten") == "gap":
            x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        else:
            x = keras.layers.Flatten(name="flatten")(x)
        units = hp.Choice("dense_units", list(DENSE_UNITS), default=SEED_PARAMS["dense_units"])
        x = keras.layers.Dense(
            units, activation="relu", kernel_initializer="he_uniform", name="dense"
        )(x)
        dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=SEED_PARAMS["dropout"])
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        # float32 softmax under any policy: bfloat16 probabilities are too coarse for the loss.
        outputs = keras.layers.Dense(
            self.num_classes, activation="softmax", dtype="float32", name="classifier"
        )(x)
        return keras.Model(inputs, outputs, name="cnn")

    def defaults(self) -> dict[str, Any]:
        """The baseline trial's parameters: the seed network with its recipe."""
        return seed_params(self.max_epochs)


def _initializers(layer: type[keras.layers.Layer]) -> dict[str, str]:
    """He-uniform initial weights, as the seed network's convs had, for either kind of conv."""
    if layer is keras.layers.SeparableConv2D:
        return {"depthwise_initializer": "he_uniform", "pointwise_initializer": "he_uniform"}
    return {"kernel_initializer": "he_uniform"}


def describe_space(hypermodel: kt.HyperModel) -> list[dict[str, Any]]:
    """Every hyperparameter the HyperModel can ask for, as KerasTuner configs.

    Builds with KerasTuner's own `HyperParameters`, raising each integer to its maximum and each
    flag to True until no new hyperparameter appears, so conditional ones (deeper blocks) are
    found too.
    """
    hp = kt.HyperParameters()
    seen = -1
    while len(hp.space) != seen:
        seen = len(hp.space)
        hypermodel.build(hp)
        for param in hp.space:
            if isinstance(param, kt.engine.hyperparameters.Int):
                hp.values[param.name] = param.max_value
            elif isinstance(param, kt.engine.hyperparameters.Boolean):
                hp.values[param.name] = True
    keras.backend.clear_session()
    return [{"class": type(p).__name__, **p.get_config()} for p in hp.space]


def check_params(description: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """Raise ValueError, naming the hyperparameter, if `values` holds a name the space described
    by `describe_space` does not have or a value it cannot take."""
    params = {p["name"]: p for p in description}
    for name, value in values.items():
        param = params.get(name)
        if param is None:
            raise ValueError(
                f"'{name}' is not a hyperparameter of the space; expected one of: "
                f"{', '.join(params)}"
            )
        kind = param["class"]
        if kind == "Choice":
            ok = value in param["values"] and type(value) is not bool
            expected = f"one of {', '.join(map(repr, param['values']))}"
        elif kind == "Boolean":
            ok, expected = isinstance(value, bool), "true or false"
        else:  # Int or Float: within the range (KerasTuner's steps are a sampling grid)
            number = (int,) if kind == "Int" else (int, float)
            ok = isinstance(value, number) and not isinstance(value, bool)
            ok = ok and param["min_value"] <= value <= param["max_value"]
            expected = f"a number in {param['min_value']}..{param['max_value']}"
        if not ok:
            raise ValueError(f"'{name}' must be {expected}. Received: {value!r}")
