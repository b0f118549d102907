"""What a network costs: parameters and FLOPs counted exactly from its layers (the seed network
by hand), unknown layers named instead of guessed, an ensemble as the sum of its members, and
latency timed within a small budget by any runner."""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
import pytest

from bench.harness import seed_hp
from tuning.model.cost import (
    COST_NAMES,
    Latency,
    ModelCost,
    count_flops,
    measure_latency,
    model_cost,
)
from tuning.model.ensemble import build_ensemble
from tuning.study.space import CNNHyperModel
from tuning.typed_json import from_json, to_json

# The seed network's multiply-accumulates, layer by layer (28x28x1 input, 'same' padding).
SEED_MACS = (
    28 * 28 * 32 * (3 * 3 * 1)  # block0_conv0
    + 14 * 14 * 64 * (3 * 3 * 32)  # block1_conv0
    + 14 * 14 * 64 * (3 * 3 * 64)  # block1_conv1
    + 3136 * 100  # dense
    + 100 * 10  # classifier
)
# The fixed extras: Rescaling 2 per pixel; each conv's bias and ReLU 1 per output element; a 2x2
# max-pool 4 per output element; the dense layers' bias and activation 1 per unit each.
SEED_EXTRAS = (
    2 * 28 * 28
    + 2 * 28 * 28 * 32
    + 4 * 14 * 14 * 32
    + 2 * 14 * 14 * 64 * 2
    + 4 * 7 * 7 * 64
    + 2 * 100
    + 2 * 10
)


def seed_network() -> keras.Model:
    return CNNHyperModel(max_epochs=1).build(seed_hp())


def test_the_seed_network_costs_what_is_counted_by_hand() -> None:
    assert SEED_MACS == 11_378_408
    cost = model_cost(seed_network(), latency=False)
    assert cost.params == 370_454
    assert cost.flops == 2 * SEED_MACS + SEED_EXTRAS == 22_896_588
    assert cost.unknown_layers == ()
    assert cost.describe() == "370,454 params, 22.9 MFLOP"


def test_an_ensemble_costs_its_members_together() -> None:
    ensemble = build_ensemble([seed_network(), seed_network()])
    flops, unknown = count_flops(ensemble)
    assert (flops, unknown) == (2 * (2 * SEED_MACS + SEED_EXTRAS) + 2 * 10, ())  # + the mean
    assert ensemble.count_params() == 2 * 370_454


def test_every_covered_layer_is_counted_by_its_shape() -> None:
    image = keras.Input((8, 8, 4))
    a = keras.layers.Conv2D(8, 3, strides=2, padding="same", groups=2, use_bias=False)(image)
    a = keras.layers.BatchNormalization()(a)  # 4x4x8
    b = keras.layers.SeparableConv2D(8, 3, strides=2, padding="same", activation="relu")(image)
    c = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="valid")(image)  # 6x6x8
    c = keras.layers.AveragePooling2D(3, strides=2)(c)  # 2x2x8
    c = keras.layers.Reshape((4, 4, 2))(c)
    c = keras.layers.Concatenate()([c, c])  # 4x4x4: nothing computed
    c = keras.layers.Conv2D(8, 1)(c)
    x = keras.layers.Add()([a, b, c])
    x = keras.layers.ReLU()(x)
    x = keras.layers.SpatialDropout2D(0.1)(keras.layers.Dropout(0.1)(x))
    pooled = keras.layers.Concatenate()(
        [keras.layers.GlobalMaxPooling2D()(x), keras.layers.GlobalAveragePooling2D()(x)]
    )
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(pooled))
    expected = (
        2 * 4 * 4 * 8 * (3 * 3 * 4 // 2)  # grouped strided conv, no bias, no activation
        + 2 * 4 * 4 * 8  # batch norm
        + 2 * (4 * 4 * 4 * 3 * 3 + 4 * 4 * 8 * 4)
        + 2 * 4 * 4 * 8  # separable + bias + relu
        + 2 * 6 * 6 * 8 * 3 * 3
        + 6 * 6 * 8  # depthwise + bias
        + 2 * 2 * 8 * 3 * 3  # average pooling 3x3
        + 2 * 4 * 4 * 8 * 4
        + 4 * 4 * 8  # 1x1 conv + bias
        + 2 * 4 * 4 * 8  # add of three
        + 4 * 4 * 8  # relu
        + 2 * 4 * 4 * 8  # two global poolings
        + 2 * 16 * 3
        + 2 * 3  # dense + bias + softmax
    )
    assert count_flops(keras.Model(image, out)) == (expected, ())


def test_a_shared_layer_is_counted_once_per_call() -> None:
    dense = keras.layers.Dense(4, use_bias=False)
    image = keras.Input((4,))
    assert count_flops(keras.Model(image, dense(dense(image)))) == (2 * 2 * 4 * 4, ())


class Doubled(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x: Any) -> Any:
        return self.dense(x) * 2


def test_what_cannot_be_counted_is_named_not_guessed() -> None:
    image = keras.Input((6,))
    x = keras.layers.LayerNormalization()(keras.layers.Dense(4)(image))
    x = keras.layers.Dense(2)(keras.ops.exp(x))
    cost = model_cost(keras.Model(image, x), latency=False)
    assert (cost.flops, cost.unknown_layers) == (None, ("LayerNormalization", "Exp (operation)"))
    assert cost.value("flops") is None
    assert cost.describe().endswith("FLOPs unknown (LayerNormalization, Exp (operation))")
    subclassed = Doubled()
    subclassed(np.zeros((1, 3), "float32"))
    assert count_flops(subclassed) == (None, ("Doubled",))


def test_latency_times_any_runner_within_its_budget() -> None:
    calls: list[int] = []

    def slow(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        time.sleep(0.02)
        return batch.mean(axis=(1, 2, 3))

    start = time.perf_counter()
    latency = measure_latency(slow, (28, 28, 1), threads=3, budget_s=0.01, min_repeats=3)
    # A slow model is timed at least 3 times per batch size, no more once the budget is spent.
    assert calls == [1] * 4 + [256] * 3  # one warm-up call, at batch 1
    assert time.perf_counter() - start < 1.0
    assert (latency.repeats, latency.batch256_repeats, latency.threads) == (3, 3, 3)
    assert 20 <= latency.batch1_ms < 200
    assert 20 / 256 <= latency.batch256_ms < 200 / 256  # per image
    quick = measure_latency(lambda b: b.sum(), (4,), budget_s=0.05, max_repeats=7)
    assert (quick.repeats, quick.batch256_repeats) == (7, 7) and quick.threads >= 1


def test_a_keras_model_is_timed_compiled_and_its_cost_reads_back() -> None:
    image = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3)(image)
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    cost = model_cost(keras.Model(image, out))
    assert cost.latency is not None and cost.latency.batch1_ms > 0
    assert cost.value("latency_ms") == cost.latency.batch1_ms
    assert [cost.value(name) for name in COST_NAMES[:2]] == [90.0, float(cost.flops or 0)]
    assert from_json(ModelCost, to_json(cost)) == cost
    assert "ms/img at batch 1" in cost.describe()


def test_an_unknown_cost_name_is_refused_in_one_line() -> None:
    cost = ModelCost(params=10, flops=20, latency=Latency(1.0, 0.1, 2, 5, 3, 0.1, 0.01))
    with pytest.raises(ValueError, match=r"expected one of: params, flops, latency_ms\. .*'macs'"):
        cost.value("macs")
