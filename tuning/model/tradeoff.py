"""Accuracy against cost, as a card says it: the `cost` section of an export's card (what making
the model took, what running it costs in each format written, the baseline's cost beside it),
the one sentence that sets the two side by side, and the non-inferiority verdict.

The verdict is decided by the paired comparison with one baseline network on the same test
images (`tuning.model.compare`): its bootstrap interval bounds d = this model's errors minus the
baseline's, and the model is called no worse by `margin` errors only when the interval's upper
bound on d is at most `margin`. A model whose interval reaches past the margin is "not shown"
no worse: the test images cannot tell, which is not the same as worse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tuning.device import detect
from tuning.model.compare import PairedComparison
from tuning.model.cost import FormatCheck, model_cost
from tuning.records import ModelCost, format_ms
from tuning.typed_json import OMIT_NONE

TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass(frozen=True)
class TrainingCost:
    """What training the export's `networks` (members kept from an earlier run not counted)
    was expected to take before it started (`estimated_seconds`, None: unknown; `measured_by`
    says from what) and what it took (`seconds`)."""

    networks: int
    estimated_seconds: float | None
    seconds: float
    measured_by: str


@dataclass(frozen=True)
class CostSection:
    """An export card's `cost`: its `training`; the shipped `model`'s parameters and FLOPs per
    image (an ensemble: all members together; latency: the Keras file's); each written file's
    check against Keras (`formats`), timed on `machine`; the `baseline` network's cost and its
    files' checks (`baseline_formats`, timed when it was exported); and, when set beside it,
    the sentence `versus` and the `verdict` at `margin` test errors."""

    training: TrainingCost | None = None
    model: ModelCost | None = field(default=None, metadata=OMIT_NONE)
    formats: list[FormatCheck] = field(default_factory=list)
    machine: str | None = field(default=None, metadata=OMIT_NONE)
    baseline: ModelCost | None = field(default=None, metadata=OMIT_NONE)
    baseline_formats: list[FormatCheck] | None = field(default=None, metadata=OMIT_NONE)
    versus: str | None = field(default=None, metadata=OMIT_NONE)
    margin: int | None = field(default=None, metadata=OMIT_NONE)
    verdict: str | None = field(default=None, metadata=OMIT_NONE)


def shipped_cost(model: Any, checks: Sequence[FormatCheck]) -> ModelCost:
    """What a shipped Keras `model` costs to run: its parameters and FLOPs per image counted
    from its layers (an ensemble: all its members), and the latency of its Keras file from
    `checks` (none if that was not timed)."""
    counted = model_cost(model, latency=False)
    keras_file = next((check for check in checks if check.format == "keras"), None)
    return dataclasses.replace(counted, latency=keras_file.latency if keras_file else None)


def cost_section(
    *,
    training: TrainingCost | None,
    model: ModelCost | None,
    checks: Sequence[FormatCheck],
    baseline: ModelCost | None,
    paired: PairedComparison | None,
    margin: int,
    baseline_checks: Sequence[FormatCheck] = (),
) -> CostSection:
    """An export card's `cost` on this machine, set beside the `baseline` network's cost and
    the `paired` comparison with it (both None: this is the baseline, or it has none): the
    sentence, and the verdict at `margin` errors where there is a paired comparison."""
    beside = baseline is not None or paired is not None
    return CostSection(
        training=training,
        model=model,
        formats=list(checks),
        machine=detect().describe(),
        baseline=baseline,
        baseline_formats=list(baseline_checks) or None,
        versus=(
            tradeoff_sentence(model, baseline, paired) + fastest_sentence(checks, baseline_checks)
            if beside
            else None
        ),
        margin=margin if paired else None,
        verdict=verdict(paired, margin) if paired else None,
    )


def tradeoff_sentence(
    model: ModelCost | None, baseline: ModelCost | None, paired: PairedComparison | None
) -> str:
    """ "4.9x fewer FLOPs, latency x0.31; errors +3, paired 95% interval [-6, +12]" (with the
    multiplication sign for x): the baseline's FLOPs over the model's, the model's batch-1
    latency over the baseline's, and the model's test errors minus the baseline network's with
    the interval of that difference. A cost not known for both (an older baseline's record, a
    layer without a FLOP count) is said to be not comparable."""
    if model and baseline and model.flops and baseline.flops:
        ratio = baseline.flops / model.flops
        fewer = ratio >= 1
        flops = (
            f"{_ratio(ratio if fewer else 1 / ratio)}{TIMES} {'fewer' if fewer else 'more'} FLOPs"
        )
    else:
        flops = "FLOPs not comparable (not counted for both)"
    if model and baseline and model.latency and baseline.latency:
        latency = f"latency {TIMES}{_ratio(model.latency.batch1_ms / baseline.latency.batch1_ms)}"
    else:
        latency = "latency not measured for both"
    if paired is None:
        return f"{flops}, {latency}; errors not compared on the same images"
    low, high = error_interval(paired)
    return (
        f"{flops}, {latency}; errors {-paired.fewer:+d}, paired {paired.interval.level:.0%} "
        f"interval [{low:+g}, {high:+g}]"
    )


def fastest_sentence(checks: Sequence[FormatCheck], baseline_checks: Sequence[FormatCheck]) -> str:
    """ "; fastest file: litert 0.05 ms/img against the baseline's onnx 0.23 (x0.22)": each
    model's quickest format at batch 1, where both wrote any."""
    if not checks or not baseline_checks:
        return ""
    mine = min(checks, key=lambda c: c.latency.batch1_ms)
    theirs = min(baseline_checks, key=lambda c: c.latency.batch1_ms)
    ratio = mine.latency.batch1_ms / theirs.latency.batch1_ms
    return (
        f"; fastest file: {mine.format} {format_ms(mine.latency.batch1_ms)} ms/img against the "
        f"baseline's {theirs.format} {format_ms(theirs.latency.batch1_ms)} ({TIMES}{_ratio(ratio)})"
    )


def _ratio(value: float) -> str:
    """Two significant digits, never in exponent form: '4.9', '0.31', '12'."""
    return f"{value:.0f}" if value >= 10 else f"{value:#.2g}"


def error_interval(paired: PairedComparison) -> tuple[float, float]:
    """The interval of d = the model's errors minus the reference's (the comparison's own
    interval is of the reference's minus the model's)."""
    return -paired.interval.high, -paired.interval.low


def verdict(paired: PairedComparison, margin: int) -> str:
    """Non-inferiority at `margin` test errors: shown only when the interval's upper bound on
    d (the model's errors minus the baseline's) is at most `margin`."""
    _, high = error_interval(paired)
    if high <= margin:
        return f"no worse than the baseline by more than {margin} errors"
    return (
        f"not shown no worse than the baseline by {margin} errors (the interval reaches {high:+g})"
    )


def describe_formats(checks: list[FormatCheck]) -> str:
    """ "keras 0.91, onnx 0.32 ms/img at batch 1" (the first: the Keras model itself)."""
    times = ", ".join(f"{c.format} {format_ms(c.latency.batch1_ms)}" for c in checks)
    return f"{times} ms/img at batch 1"
