"""An ensemble of trained networks as one Keras model: the members' softmax outputs averaged.

Built only from built-in layers (nested member models and `Average`), so the `.keras` file
loads with `safe_mode=True` and `tuning predict` runs it like any single network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

MEMBER_PREFIX = "member_"
OUTPUT_NAME = "mean_probabilities"


def build_ensemble(members: Sequence[keras.Model], *, name: str = "ensemble") -> keras.Model:
    """One model whose output is the mean of `members`' outputs on the same input, compiled to
    evaluate on integer labels. The members are renamed `member_0`, `member_1`, ... in order.

    Raises:
        ValueError: fewer than two members, or members of different input or output shapes.
    """
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members. Received: {len(members)}")
    shapes = {(tuple(m.input_shape[1:]), tuple(m.output_shape[1:])) for m in members}
    if len(shapes) != 1:
        raise ValueError(
            f"ensemble members must share their input and output shapes. Received: {shapes}"
        )
    ((input_shape, _),) = shapes
    inputs = keras.Input(shape=input_shape, name="image")
    outputs = []
    for index, member in enumerate(members):
        member.name = f"{MEMBER_PREFIX}{index}"
        outputs.append(member(inputs))
    mean = keras.layers.Average(name=OUTPUT_NAME, dtype="float32")(outputs)
    model = keras.Model(inputs, mean, name=name)
    # Compiled for integer labels like a single export, so `evaluate` works after loading. Plain
    # SGD keeps no state per weight (Adam would triple the file); it is built so that the saved
    # file matches what loading expects (no warning).
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    return model


def ensemble_members(model: Any) -> list[keras.Model]:
    """The member networks of a model `build_ensemble` made; [] for any other model."""
    if not model.layers or not isinstance(model.layers[-1], keras.layers.Average):
        return []
    members = [layer for layer in model.layers if layer.name.startswith(MEMBER_PREFIX)]
    return [m for m in members if isinstance(m, keras.Model)]
