"""Accuracy against cost on a card: the sentence that sets a model's cost and errors beside the
baseline network's, and the non-inferiority verdict on either side of the margin, from
hand-made comparisons (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuning.device import detect
from tuning.model.card import ExportCard, ModelCard
from tuning.model.compare import PairedComparison
from tuning.model.cost import FormatCheck, Latency, ModelCost
from tuning.model.tradeoff import CostSection, TrainingCost, cost_section, tradeoff_sentence
from tuning.summaries import export_summary
from tuning.training.cv import Interval

X = "\N{MULTIPLICATION SIGN}"


def latency(batch1_ms: float) -> Latency:
    return Latency(batch1_ms, batch1_ms / 20, 2, 25, 3, 0.01, 0.001)


SMALL = ModelCost(params=75_118, flops=4_579_318, latency=latency(0.31))
SEED = ModelCost(params=370_454, flops=22_896_588, latency=latency(1.0))


def paired(errors: int, reference_errors: int, low: float, high: float) -> PairedComparison:
    """A comparison whose interval of `fewer` (the reference's errors minus the model's) is
    [low, high]."""
    return PairedComparison(
        errors=errors,
        reference_errors=reference_errors,
        images=10_000,
        only_reference_wrong=20,
        only_model_wrong=20 + errors - reference_errors,
        p_value=0.6,
        interval=Interval(method="paired bootstrap, 10000 resamples", low=low, high=high),
        resamples=10_000,
        seed=42,
    )


# 53 errors against 50: d = +3, its interval [-6, +12] (fewer: [-12, +6]).
WORSE_BY_3 = paired(53, 50, low=-12.0, high=6.0)


def section(comparison: PairedComparison | None, margin: int) -> CostSection:
    return cost_section(
        training=None, model=SMALL, checks=[], baseline=SEED, paired=comparison, margin=margin
    )


def test_the_sentence_sets_cost_and_errors_beside_the_baseline() -> None:
    assert tradeoff_sentence(SMALL, SEED, WORSE_BY_3) == (
        f"5.0{X} fewer FLOPs, latency {X}0.31; errors +3, paired 95% interval [-6, +12]"
    )
    # An ensemble of three seed networks costs more, and is slower, than one.
    triple = ModelCost(params=3 * SEED.params, flops=3 * SEED.flops, latency=latency(2.5))  # type: ignore[operator]
    better = paired(40, 50, low=2.0, high=18.0)
    assert tradeoff_sentence(triple, SEED, better) == (
        f"3.0{X} more FLOPs, latency {X}2.5; errors -10, paired 95% interval [-18, -2]"
    )


def test_what_is_not_known_for_both_is_said_not_compared() -> None:
    unknown = ModelCost(params=10, flops=None, unknown_layers=("LayerNormalization",))
    assert tradeoff_sentence(unknown, None, None) == (
        "FLOPs not comparable (not counted for both), latency not measured for both; "
        "errors not compared on the same images"
    )


@pytest.mark.parametrize(
    ("margin", "verdict"),
    [
        (12, "no worse than the baseline by more than 12 errors"),  # the bound is the margin
        (15, "no worse than the baseline by more than 15 errors"),
        (11, "not shown no worse than the baseline by 11 errors (the interval reaches +12)"),
        (10, "not shown no worse than the baseline by 10 errors (the interval reaches +12)"),
    ],
)
def test_no_worse_is_said_only_when_the_interval_stays_within_the_margin(
    margin: int, verdict: str
) -> None:
    cost = section(WORSE_BY_3, margin)
    assert (cost.margin, cost.verdict) == (margin, verdict)
    assert cost.versus == tradeoff_sentence(SMALL, SEED, WORSE_BY_3)


def test_without_a_paired_comparison_there_is_no_verdict() -> None:
    cost = section(None, 10)
    assert cost.verdict is None and cost.margin is None
    assert cost.versus is not None and cost.versus.endswith(
        "errors not compared on the same images"
    )
    alone = cost_section(
        training=None, model=SMALL, checks=[], baseline=None, paired=None, margin=10
    )  # the baseline's own card
    assert (alone.versus, alone.baseline, alone.machine) == (None, None, detect().describe())


def test_the_card_keeps_the_cost_section_and_the_summary_says_it(tmp_path: Path) -> None:
    checks = [
        FormatCheck("keras", "model.keras", latency(0.31), None, 53),
        FormatCheck("onnx", "model.onnx", latency(0.12), 3e-7, 53),
    ]
    training = TrainingCost(networks=2, estimated_seconds=60.0, seconds=55.0, measured_by="x")
    cost = cost_section(
        training=training,
        model=SMALL,
        checks=checks,
        baseline=SEED,
        paired=WORSE_BY_3,
        margin=15,
    )
    card = ExportCard(study="s", trial=3, cost=cost)
    card.write(tmp_path)
    assert ModelCard.read(tmp_path / "model.keras") == card
    lines = export_summary(card, tmp_path).splitlines()
    machine = detect().describe()
    assert (
        f"  Cost: 75,118 params, 4.6 MFLOP; keras 0.31, onnx 0.12 ms/img at batch 1 ({machine})"
    ) in lines
    assert (
        f"  Against the baseline network's cost: 5.0{X} fewer FLOPs, latency {X}0.31; errors +3, "
        "paired 95% interval [-6, +12]: no worse than the baseline by more than 15 errors"
    ) in lines


def test_the_sentence_sets_each_models_fastest_file_beside_the_other() -> None:
    def check(fmt: str, ms: float) -> FormatCheck:
        return FormatCheck(fmt, f"model.{fmt}", latency(ms), 1e-7, 53)

    mine = [check("keras", 0.31), check("onnx", 0.04), check("litert", 0.02)]
    theirs = [check("keras", 1.0), check("onnx", 0.23), check("litert", 0.25)]
    cost = cost_section(
        training=None, model=SMALL, checks=mine, baseline=SEED, paired=WORSE_BY_3, margin=10,
        baseline_checks=theirs,
    )  # fmt: skip
    assert cost.versus is not None and cost.versus.endswith(
        f"; fastest file: litert 0.02 ms/img against the baseline's onnx 0.23 ({X}0.087)"
    )
    assert cost.baseline_formats == theirs
    # A baseline exported before files were timed: nothing to set beside.
    alone = cost_section(
        training=None, model=SMALL, checks=mine, baseline=SEED, paired=WORSE_BY_3, margin=10
    )
    assert alone.versus is not None and "fastest" not in alone.versus
