"""What a network costs to run: its parameters, its forward FLOPs per image counted from its
layers, and its inference latency timed on this machine; `FormatCheck`, one written deployment
format checked against Keras.

FLOPs are counted, never estimated: 2 per multiply-accumulate of Conv, SeparableConv,
DepthwiseConv and Dense layers, plus 1 per output element for a bias and for an activation
(any function alike), 2 per element for Rescaling and for BatchNormalization (a scale and a
shift at inference), pool_h x pool_w per output element of a pooling window, 1 per input element
of a global pooling, n - 1 per element for Add of n inputs and n for Average (the ensemble's
mean). Reshaping, dropout, concatenation and inputs cost 0. Any other layer, or an operation
outside a layer, makes the count unknown (None) and is named, so a user's HyperModel gets no
guessed figure. Nested models (an ensemble's members) are counted inside; an ensemble costs the
sum of its members.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np

from tuning import backend
from tuning.records import COST_NAMES, FormatCheck, Latency, ModelCost, format_flops, format_ms

__all__ = [
    "COST_NAMES",
    "FormatCheck",
    "Latency",
    "ModelCost",
    "count_flops",
    "format_flops",
    "format_ms",
    "keras_predictor",
    "measure_latency",
    "model_cost",
]

Predict = Callable[[np.ndarray], Any]
BATCHES = (1, 256)  # the batch sizes latency is timed at


def model_cost(model: keras.Model, *, latency: bool = True) -> ModelCost:
    """The cost of a built Keras model: its parameters (an ensemble: all members'), FLOPs per
    image (`count_flops`) and, if `latency`, its latency here (`measure_latency` of
    `keras_predictor`)."""
    flops, unknown = count_flops(model)
    timed = measure_latency(keras_predictor(model), _input_shape(model)) if latency else None
    return ModelCost(
        params=int(model.count_params()), flops=flops, unknown_layers=unknown, latency=timed
    )


def count_flops(model: keras.Model) -> tuple[int | None, tuple[str, ...]]:
    """Forward FLOPs per image of a built model by the module's convention, and the classes of
    the layers (or operations) it cannot count, each named once; FLOPs are None when any is."""
    total, unknown = _count(model)
    names = tuple(dict.fromkeys(unknown))
    return (None if names else total), names


def keras_predictor(model: keras.Model) -> Predict:
    """`model`'s inference as a function of a NumPy batch, compiled, as a deployed model runs:
    under TensorFlow a `tf.function` traced once for any batch size, elsewhere Keras's own
    compiled `predict_on_batch`."""
    if backend.name() != "tensorflow":
        return model.predict_on_batch
    import tensorflow as tf

    spec = tf.TensorSpec((None, *_input_shape(model)), model.inputs[0].dtype)
    # No autograph: a plain call needs none, and its generated source files would be left in
    # TMPDIR by a study process that re-executes itself (`tuning study`, every 10 trials).
    call = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    return lambda x: call(x).numpy()


def measure_latency(
    predict: Predict,
    input_shape: tuple[int, ...],
    *,
    dtype: str = "float32",
    threads: int | None = None,
    budget_s: float = 0.03,
    min_repeats: int = 3,
    max_repeats: int = 25,
    seed: int = 0,
) -> Latency:
    """Per-image milliseconds of `predict` (any callable taking a NumPy batch: Keras, ONNX
    Runtime, LiteRT) at batch 1 and 256, on random images of `input_shape` (no batch axis)
    in 0..255. One warm-up call at batch 1 (tracing, compiling), then at each batch size timed
    calls until `budget_s` is spent, at least `min_repeats` and at most `max_repeats`; their
    median and interquartile range. Batch 256 gets no warm-up call of its own: it would cost a
    quarter of the time spent there on a small CNN, and the median of 3 or more calls already
    discounts one slower first call. `threads`: what the runner uses (default: the Keras
    backend's CPU threads).

    Raises:
        ValueError: `min_repeats` < 1 or above `max_repeats`, or `budget_s` < 0.
    """
    if not 1 <= min_repeats <= max_repeats or budget_s < 0:
        raise ValueError(
            "measure_latency needs 1 <= min_repeats <= max_repeats and budget_s >= 0. Received: "
            f"min_repeats={min_repeats}, max_repeats={max_repeats}, budget_s={budget_s}"
        )
    rng = np.random.default_rng(seed)
    stats: list[tuple[float, float, int]] = []
    for batch in BATCHES:
        x = rng.uniform(0, 255, size=(batch, *input_shape)).astype(dtype)
        if batch == BATCHES[0]:
            predict(x)  # warm-up: tracing, compiling, allocation
        times: list[float] = []
        while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < budget_s):
            start = time.perf_counter()
            predict(x)
            times.append(time.perf_counter() - start)
        low, median, high = np.percentile(times, [25, 50, 75]) * 1000 / batch
        stats.append((float(median), float(high - low), len(times)))
    (ms1, iqr1, n1), (ms256, iqr256, n256) = stats
    return Latency(
        batch1_ms=ms1,
        batch256_ms=ms256,
        threads=threads if threads is not None else cpu_threads(),
        repeats=n1,
        batch256_repeats=n256,
        batch1_iqr_ms=iqr1,
        batch256_iqr_ms=iqr256,
    )


def cpu_threads() -> int:
    """The CPU threads the Keras backend computes with: TensorFlow's intra-op threads where set,
    PyTorch's, else every core this process may use."""
    name = backend.name()
    if name == "tensorflow":
        import tensorflow as tf

        if threads := tf.config.threading.get_intra_op_parallelism_threads():
            return int(threads)
    elif name == "torch":
        import torch

        return int(torch.get_num_threads())
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _input_shape(model: keras.Model) -> tuple[int, ...]:
    if len(model.inputs) != 1 or None in model.inputs[0].shape[1:]:
        raise ValueError(
            "latency is timed for a model with one input of fixed shape. Received: inputs="
            f"{[tuple(t.shape) for t in model.inputs]}"
        )
    return tuple(int(d) for d in model.inputs[0].shape[1:])


def _count(model: Any) -> tuple[int, list[str]]:
    """FLOPs of the layers that can be counted, and the names of those that cannot."""
    nodes = _graph_nodes(model)
    if nodes is None:  # a subclassed model: its `call` is code, not a graph of layers
        return 0, [type(model).__name__]
    total = 0
    unknown: list[str] = []
    for node in nodes:
        layer = node.operation
        if _is_graph_model(layer):
            flops, inner = _count(layer)
            total, unknown = total + flops, unknown + inner
            continue
        rule = _RULES.get(type(layer))
        inputs = [_elements_shape(t) for t in node.input_tensors]
        outputs = [_elements_shape(t) for t in node.output_tensors]
        shapes_known = all(s is not None for s in (*inputs, *outputs))
        if rule is None or not shapes_known:
            named = type(layer).__name__
            unknown.append(named if isinstance(layer, keras.Layer) else f"{named} (operation)")
            continue
        total += rule(layer, inputs, outputs[0])  # type: ignore[arg-type]
    return total, unknown


def _graph_nodes(model: Any) -> list[Any] | None:
    """Every call of an operation in a functional (or Sequential) model's graph, a shared layer
    once per call. Keras has no public walk of a graph's calls; `layer.output` names only a
    layer's first call, so the graph's own nodes are read."""
    graph = getattr(model, "_functional", None) or model  # a Sequential wraps a Functional
    by_depth = getattr(graph, "_nodes_by_depth", None)
    if by_depth is None or not _is_graph_model(model):
        return None
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _is_graph_model(layer: Any) -> bool:
    """A Keras Functional or Sequential model (not a subclass with its own `call`)."""
    kind = type(layer)
    return kind.__module__.startswith("keras.") and kind.__name__ in ("Functional", "Sequential")


def _elements_shape(tensor: Any) -> tuple[int, ...] | None:
    """A tensor's shape without its batch axis; None if any of it is unknown."""
    shape = tuple(tensor.shape[1:])
    return None if any(d is None for d in shape) else tuple(int(d) for d in shape)


Shape = tuple[int, ...]
Rule = Callable[[Any, list[Shape], Shape], int]


def _channels(layer: Any, shape: Shape) -> int:
    return (
        shape[0]
        if getattr(layer, "data_format", "channels_last") == "channels_first"
        else shape[-1]
    )


def _extras(layer: Any, out: Shape) -> int:
    """A weight layer's bias and activation: 1 FLOP per output element each."""
    activation = getattr(layer, "activation", None)
    active = activation is not None and getattr(activation, "__name__", "") != "linear"
    return math.prod(out) * (int(bool(getattr(layer, "use_bias", False))) + int(active))


def _conv(layer: Any, ins: list[Shape], out: Shape) -> int:
    per_output = math.prod(layer.kernel_size) * _channels(layer, ins[0]) // layer.groups
    return 2 * math.prod(out) * per_output + _extras(layer, out)


def _depthwise(layer: Any, ins: list[Shape], out: Shape) -> int:
    return 2 * math.prod(out) * math.prod(layer.kernel_size) + _extras(layer, out)


def _separable(layer: Any, ins: list[Shape], out: Shape) -> int:
    depthwise_channels = _channels(layer, ins[0]) * layer.depth_multiplier
    positions = math.prod(out) // _channels(layer, out)
    depthwise = positions * depthwise_channels * math.prod(layer.kernel_size)
    pointwise = math.prod(out) * depthwise_channels
    return 2 * (depthwise + pointwise) + _extras(layer, out)


def _dense(layer: Any, ins: list[Shape], out: Shape) -> int:
    return 2 * math.prod(out) * ins[0][-1] + _extras(layer, out)


def _activation(layer: Any, ins: list[Shape], out: Shape) -> int:
    return _extras(layer, out)


def _per_output(flops: int) -> Rule:
    return lambda layer, ins, out: flops * math.prod(out)


def _pool(layer: Any, ins: list[Shape], out: Shape) -> int:
    return math.prod(out) * math.prod(layer.pool_size)


def _global_pool(layer: Any, ins: list[Shape], out: Shape) -> int:
    return math.prod(ins[0])


def _add(layer: Any, ins: list[Shape], out: Shape) -> int:
    return (len(ins) - 1) * math.prod(out)


def _average(layer: Any, ins: list[Shape], out: Shape) -> int:
    return len(ins) * math.prod(out)


def _rules(pairs: Iterable[tuple[tuple[type, ...], Rule]]) -> dict[type, Rule]:
    return {kind: rule for kinds, rule in pairs for kind in kinds}


L = keras.layers
# Exact classes only: a subclass may compute something else, so it counts as unknown.
_RULES: dict[type, Rule] = _rules(
    [
        ((L.Conv1D, L.Conv2D, L.Conv3D), _conv),
        ((L.DepthwiseConv1D, L.DepthwiseConv2D), _depthwise),
        ((L.SeparableConv1D, L.SeparableConv2D), _separable),
        ((L.Dense,), _dense),
        ((L.Rescaling, L.BatchNormalization), _per_output(2)),
        ((L.Activation,), _activation),
        ((L.ReLU, L.LeakyReLU, L.ELU, L.Softmax), _per_output(1)),
        ((L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D), _pool),
        ((L.GlobalAveragePooling2D, L.GlobalMaxPooling2D), _global_pool),
        ((L.Add,), _add),
        ((L.Average,), _average),
        (
            (
                L.InputLayer,
                L.Flatten,
                L.Reshape,
                L.Dropout,
                L.SpatialDropout1D,
                L.SpatialDropout2D,
                L.SpatialDropout3D,
                L.Concatenate,
            ),
            _per_output(0),
        ),
    ]
)
del L
