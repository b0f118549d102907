"""What the commands print when they finish: an export's, a comparison's and a transfer's summary,
each read from its typed record (the CLI prints them; tests read them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from tuning.console import duration
from tuning.model.compare import PairedComparison, format_p
from tuning.model.tradeoff import describe_formats

if TYPE_CHECKING:
    from tuning.export.estimate import ExportEstimate
    from tuning.model.card import ExportCard
    from tuning.transfer.run import TransferResult


def export_summary(
    card: ExportCard,
    out_dir: Path,
    *,
    estimate: ExportEstimate | None = None,
    took: float | None = None,
) -> str:
    """What `tuning export` prints at the end: the trial, its CV and test scores, its members,
    the paired comparison with the baseline, what the model costs to run beside the baseline
    (with the verdict at the study's margin), and the time it was `estimate`d to take beside
    the seconds it `took`."""
    lines = [
        f"Exported trial #{card.trial} of study {card.study} to {out_dir}/",
        _scores_line(card),
        f"  Keras backend {card.backend}{_where(card)}; formats: {', '.join(card.formats)}",
        *_ensemble_lines(card),
        *_baseline_lines(card),
        *_cost_lines(card),
        *_time_lines(estimate, took),
        f"  Try: tuning predict {out_dir / 'model.keras'} IMAGE.png",
    ]
    return "\n".join(lines)


def _scores_line(card: ExportCard) -> str:
    test, training = card.test, card.training
    tested = (
        f"test accuracy {test.accuracy:.4f} ({test.errors} errors in {test.images})"
        if test
        else "no test split, so no test accuracy"
    )
    epochs = (
        f"{training.recipe.epochs} epochs" if training and training.recipe else "by its own fit"
    )
    cv = f"rung {card.cv.rung} CV accuracy {card.cv.mean:.4f}" if card.cv else "no CV score"
    seconds = f" in {training.seconds:.0f} s" if training else ""
    return f"  {cv}, {tested}, trained {epochs}{seconds}"


def _where(card: ExportCard) -> str:
    return f" on {card.training.device}" if card.training else ""


def _ensemble_lines(card: ExportCard) -> list[str]:
    ensemble = card.ensemble
    if not ensemble or len(ensemble.scores) <= 1:
        return []
    errors = ", ".join(str(s.errors) for s in ensemble.scores)
    spread = f" ± {ensemble.std_errors:.1f}" if ensemble.std_errors is not None else ""
    mean = f" (mean {ensemble.mean_errors:.1f}{spread})" if ensemble.mean_errors else ""
    of = "seeds" if ensemble.members == "seeds" else "top trials"
    return [
        f"  An ensemble of {len(ensemble.scores)} {of}; alone they make {errors} errors"
        f"{mean}; the mean of the first 1, 2, ... makes {', '.join(map(str, ensemble.curve))}"
    ]


def _baseline_lines(card: ExportCard) -> list[str]:
    baseline = card.baseline
    if baseline is None:
        return []
    if baseline.trial == card.trial:
        lines = ["  This is the baseline other exports are set beside"]
    elif baseline.paired:
        lines = [
            f"  Against the baseline (trial #{baseline.trial}, one network): "
            f"{baseline.paired.sentence()}"
        ]
    else:
        saved = baseline.errors_saved
        lines = [
            f"  Baseline (trial #{baseline.trial}): {baseline.test_errors} errors; this model "
            f"makes {abs(saved)} {'fewer' if saved >= 0 else 'more'}"
        ]
    if baseline.seeds_compared:
        lines.append(f"  Did tuning help? {baseline.seeds_compared.sentence()}")
    return lines


def _cost_lines(card: ExportCard) -> list[str]:
    """'Cost: 75,118 params, 4.6 MFLOP; keras 0.42, onnx 0.15 ms/img at batch 1 (CPU: ...)'
    and the sentence against the baseline's cost, with the verdict."""
    cost = card.cost
    if cost is None or cost.model is None:
        return []
    line = f"  Cost: {dataclasses.replace(cost.model, latency=None).describe()}"
    if cost.formats:
        line += f"; {describe_formats(cost.formats)}"
    lines = [line + (f" ({cost.machine})" if cost.machine else "")]
    if cost.versus:
        verdict = f": {cost.verdict}" if cost.verdict else ""
        lines.append(f"  Against the baseline network's cost: {cost.versus}{verdict}")
    return lines


def _time_lines(estimate: ExportEstimate | None, took: float | None) -> list[str]:
    """'Took 41 min 57 s; estimated before training: about 40 min for 6 networks'."""
    if took is None:
        return []
    line = f"  Took {duration(took)}"
    if estimate is not None and estimate.seconds is not None:
        count = len(estimate.networks)
        line += (
            f"; estimated before training: about {duration(estimate.seconds, about=True)} for "
            f"{count} network{'s' if count != 1 else ''} (training only)"
        )
    return [line]


def compare_summary(result: PairedComparison, a: str, b: str) -> str:
    """What `tuning compare A B` prints: both scores, the discordant images, the statistics."""
    accuracy = 1 - result.errors / result.images
    reference_accuracy = 1 - result.reference_errors / result.images
    return (
        f"A {a}: {result.errors} errors in {result.images} (accuracy {accuracy:.4f})\n"
        f"B {b}: {result.reference_errors} errors (accuracy {reference_accuracy:.4f})\n"
        f"  only A wrong: {result.only_model_wrong}, only B wrong: "
        f"{result.only_reference_wrong} (McNemar exact {format_p(result.p_value)})\n"
        f"  A against B: {result.sentence(model='A', reference='B')} "
        f"({result.interval.method}, seed {result.seed})"
    )


def transfer_summary(result: TransferResult) -> str:
    """What `tuning transfer` prints at the end: the held-out score and the configuration."""
    card, out_dir = result.card, result.out_dir
    cv, tuning = card.cv, card.tuning
    if cv is None or tuning is None:  # a finished transfer has its result
        raise ValueError(f"the transfer card of {out_dir} has no result")
    froze = f" ({card.base.froze})" if card.base.froze else ""
    return (
        f"Transferred {card.base.path}{froze} to {', '.join(card.class_names or [])}: "
        f"{out_dir}/\n"
        f"  nested-CV accuracy {cv.accuracy:.3f} ({cv.correct}/{cv.images}), 95% Wilson "
        f"interval {cv.interval.low:.3f} to {cv.interval.high:.3f}\n"
        f"  study '{card.study}', best trial #{tuning.best_trial}: {card.params}\n"
        f"  Try: tuning predict {out_dir / 'model.keras'} IMAGE.png"
    )
