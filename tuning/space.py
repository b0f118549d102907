"""The search space, written once as a KerasTuner HyperModel.

`build(hp)` answers "what to try"; it runs unchanged with KerasTuner's `HyperParameters` and with
`tuning.hp.OptunaHyperParameters`. The defaults of every hyperparameter are the seed network from
the student project: Conv32-Pool-Conv64-Conv64-Pool-Dense100-Dense10, Adam, batch 32, 10 epochs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import keras
import keras_tuner as kt

from tuning.config import POLICIES

MAX_CONV_BLOCKS = 3
FILTERS = (16, 32, 64, 128)
DENSE_UNITS = (64, 100, 128, 256, 512)
OPTIMIZERS = ("adam", "sgd", "rmsprop")
BATCH_SIZES = (32, 64, 128, 256)

SEED_PARAMS: dict[str, Any] = {
    "conv_blocks": 2,
    "kernel_size": 3,
    "batch_norm": False,
    "filters_0": 32,
    "convs_0": 1,
    "filters_1": 64,
    "convs_1": 2,
    "dense_units": 100,
    "dropout": 0.0,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 32,
    "epochs": 10,
}


def seed_params(max_epochs: int) -> dict[str, Any]:
    """The seed network's parameters, with its 10 epochs capped at the study's `max_epochs`."""
    return {**SEED_PARAMS, "epochs": min(SEED_PARAMS["epochs"], max_epochs)}


class CNNHyperModel(kt.HyperModel):
    """Conv blocks (1-2 convs + max-pool each) -> dense -> softmax, for 28x28x1 images in 0..255."""

    def __init__(
        self,
        *,
        max_epochs: int = 10,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (28, 28, 1),
        precision: str = "float32",
    ) -> None:
        super().__init__(name="cnn")
        if precision not in POLICIES:
            raise ValueError(f"precision must be one of {', '.join(POLICIES)}: {precision!r}")
        self.max_epochs = max_epochs
        self.num_classes = num_classes
        self.input_shape = input_shape
        self.precision = precision

    def build(self, hp: Any) -> keras.Model:
        """The network for `hp`, its layers made under the `precision` dtype policy."""
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.precision)
        try:
            return self._make_model(hp)
        finally:
            keras.config.set_dtype_policy(previous)

    def _make_model(self, hp: Any) -> keras.Model:  # not `_build`: KerasTuner uses that name
        blocks = hp.Int("conv_blocks", 1, MAX_CONV_BLOCKS, default=SEED_PARAMS["conv_blocks"])
        kernel = hp.Choice("kernel_size", [3, 5], default=SEED_PARAMS["kernel_size"])
        batch_norm = hp.Boolean("batch_norm", default=SEED_PARAMS["batch_norm"])

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
                x = keras.layers.Conv2D(
                    filters,
                    kernel,
                    padding="same",
                    use_bias=not batch_norm,
                    kernel_initializer="he_uniform",
                    name=f"block{block}_conv{conv}",
                )(x)
                if batch_norm:
                    x = keras.layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
                x = keras.layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)

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
        model = keras.Model(inputs, outputs, name="cnn")

        optimizer = hp.Choice("optimizer", list(OPTIMIZERS), default=SEED_PARAMS["optimizer"])
        learning_rate = hp.Float(
            "learning_rate", 1e-4, 3e-2, sampling="log", default=SEED_PARAMS["learning_rate"]
        )
        model.compile(
            optimizer=make_optimizer(optimizer, learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def fit_options(self, hp: Any) -> dict[str, int]:
        """The training hyperparameters that are not part of the model: batch size and epochs."""
        return {
            "batch_size": hp.Choice("batch_size", list(BATCH_SIZES), default=32),
            "epochs": hp.Int(
                "epochs", 1, self.max_epochs, default=min(SEED_PARAMS["epochs"], self.max_epochs)
            ),
        }

    def fit(self, hp: Any, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        # KerasTuner's Hyperband passes its own `epochs`; it wins over the sampled one.
        options = {k: v for k, v in self.fit_options(hp).items() if k not in kwargs}
        return model.fit(*args, **options, **kwargs)


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A Keras optimizer by name; SGD gets Nesterov momentum 0.9, the usual CNN setting."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}. Received: {name!r}")


def describe_space(hypermodel: CNNHyperModel) -> list[dict[str, Any]]:
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
        hypermodel.fit_options(hp)
        for param in hp.space:
            if isinstance(param, kt.engine.hyperparameters.Int):
                hp.values[param.name] = param.max_value
            elif isinstance(param, kt.engine.hyperparameters.Boolean):
                hp.values[param.name] = True
    keras.backend.clear_session()
    return [{"class": type(p).__name__, **p.get_config()} for p in hp.space]


def space_fingerprint(description: list[dict[str, Any]]) -> str:
    """A short hash of a space description; a stored study resumes only if it matches."""
    canonical = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
