"""Is one model better than another on the same test images? Paired statistics, since one
export's error count moves by several per 10,000 with the training seed alone:

- `paired_comparison`: two models on the same images. McNemar's exact test on the images only
  one of them got wrong, and a paired bootstrap interval of the difference in errors.
- `mean_difference`: several seeds of each model. The difference of their mean errors with a
  Welch t interval: the answer to "did tuning help?" that no single pair of runs can give.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from tuning.errors import ModelError
from tuning.model.predictions import PREDICTIONS_FILE, TestPredictions
from tuning.training.cv import Interval

RESAMPLES = 10_000
LEVEL = 0.95


@dataclass(frozen=True)
class PairedComparison:
    """A model against a reference on the same `images`: their errors, the images only one of
    them got wrong, McNemar's exact `p_value` on those, and the paired bootstrap `interval` of
    `fewer` (reference errors minus the model's) from `resamples` resamples seeded by `seed`."""

    errors: int
    reference_errors: int
    images: int
    only_reference_wrong: int
    only_model_wrong: int
    p_value: float
    interval: Interval
    resamples: int
    seed: int

    @property
    def fewer(self) -> int:
        return self.reference_errors - self.errors

    @property
    def shown(self) -> bool:
        """Whether the interval excludes 0: a difference shown, not only seen."""
        return self.interval.low > 0 or self.interval.high < 0

    def sentence(self, *, model: str = "this model", reference: str = "the baseline") -> str:
        """The comparison in words, e.g. "30 errors against 35: 5 fewer, 95% interval -2 to
        12, McNemar p = 0.30: not shown to be better"."""
        fewer = self.fewer
        change = f"{abs(fewer)} {'fewer' if fewer >= 0 else 'more'}" if fewer else "as many"
        if not self.shown:
            verdict = f"{model} is not shown to differ from {reference}"
            if fewer:
                verdict = f"not shown to be {'better' if fewer > 0 else 'worse'}"
        else:
            verdict = f"shown to be {'better' if self.interval.low > 0 else 'worse'}"
        return (
            f"{self.errors} errors against {self.reference_errors}: {change}, "
            f"{self.interval.level:.0%} interval {self.interval.low:g} to {self.interval.high:g}, "
            f"McNemar {format_p(self.p_value)}: {verdict}"
        )


def format_p(p_value: float) -> str:
    """ "p = 0.19", or "p < 0.0001" for what two digits cannot show."""
    return f"p = {p_value:.2g}" if p_value >= 1e-4 else "p < 0.0001"


def paired_comparison(
    model: TestPredictions,
    reference: TestPredictions,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> PairedComparison:
    """`model` against `reference` on the same test images.

    Raises:
        ModelError: their test images differ (by sha256 or by count).
    """
    if not model.same_images(reference):
        raise ModelError(
            f"the two models were tested on different test data ({model.describe_images()}, "
            f"against {reference.describe_images()}); a paired comparison needs the same images"
        )
    wrong, reference_wrong = model.wrong, reference.wrong
    only_reference = int(np.sum(reference_wrong & ~wrong))
    only_model = int(np.sum(wrong & ~reference_wrong))
    discordant = only_reference + only_model
    p_value = 1.0 if discordant == 0 else stats.binomtest(only_model, discordant).pvalue
    return PairedComparison(
        errors=int(wrong.sum()),
        reference_errors=int(reference_wrong.sum()),
        images=len(wrong),
        only_reference_wrong=only_reference,
        only_model_wrong=only_model,
        p_value=float(p_value),
        interval=_bootstrap_interval(
            reference_wrong.astype(np.float64) - wrong, resamples=resamples, seed=seed, level=level
        ),
        resamples=resamples,
        seed=seed,
    )


def _bootstrap_interval(fewer: np.ndarray, *, resamples: int, seed: int, level: float) -> Interval:
    """The percentile bootstrap interval of `fewer.sum()`, resampling the images in pairs."""
    method = f"paired bootstrap, {resamples} resamples"
    if not fewer.any():  # no image told them apart: every resample says 0
        return Interval(method=method, level=level, low=0.0, high=0.0)
    result = stats.bootstrap(
        (fewer,),
        np.sum,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        axis=-1,
        batch=1000,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return Interval(method=method, level=level, low=float(low), high=float(high))


@dataclass(frozen=True)
class MeanDifference:
    """Test errors of several seeds of a model and of a reference; `difference` is the
    reference's mean minus the model's (positive: the model makes fewer) with a Welch t
    `interval` (None: fewer than two seeds of either)."""

    errors: list[int]
    reference_errors: list[int]
    difference: float
    interval: Interval | None

    @property
    def shown(self) -> bool:
        return self.interval is not None and (self.interval.low > 0 or self.interval.high < 0)

    def sentence(self) -> str:
        seeds = f"{len(self.errors)} seeds against {len(self.reference_errors)}"
        mean = float(np.mean(self.errors))
        reference = float(np.mean(self.reference_errors))
        if self.interval is None:
            return f"mean errors {mean:.1f} against {reference:.1f} ({seeds}); no interval"
        verdict = "no difference shown"
        if self.shown:
            verdict = "shown to be better" if self.difference > 0 else "shown to be worse"
        return (
            f"mean errors {mean:.1f} against {reference:.1f} ({seeds}): "
            f"{abs(self.difference):.1f} {'fewer' if self.difference >= 0 else 'more'}, "
            f"{self.interval.level:.0%} interval "
            f"{self.interval.low:.1f} to {self.interval.high:.1f}: {verdict}"
        )


def mean_difference(
    errors: Sequence[int], reference_errors: Sequence[int], *, level: float = LEVEL
) -> MeanDifference:
    """The reference's mean errors minus the model's, over their seeds, with a Welch t interval."""
    a, b = np.asarray(reference_errors, dtype=float), np.asarray(errors, dtype=float)
    difference = float(a.mean() - b.mean())
    interval = None
    if len(a) >= 2 and len(b) >= 2:
        if a.var() == 0 and b.var() == 0:  # t is undefined; the seeds agree exactly
            low = high = difference
        else:
            ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(level)
            low, high = float(ci.low), float(ci.high)
        if not (math.isnan(low) or math.isnan(high)):
            interval = Interval(method="welch t", level=level, low=low, high=high)
    return MeanDifference(
        list(map(int, errors)), list(map(int, reference_errors)), difference, interval
    )


def compare_exports(
    model: str | Path, reference: str | Path, *, resamples: int = RESAMPLES, seed: int = 0
) -> PairedComparison:
    """`paired_comparison` of two exports, each given as its folder, its model file or its
    `test_predictions.npz`.

    Raises:
        ModelError: either is missing, is neither an export folder nor a model file, has no
            readable test predictions, or they were tested on different test data (naming both).
    """
    if resamples < 100:
        raise ModelError(
            f"must be at least 100. Received: resamples={resamples}", param="resamples"
        )
    ours, theirs = export_predictions(model), export_predictions(reference)
    if not ours.same_images(theirs):
        raise ModelError(
            f"{model} and {reference} were tested on different test data "
            f"({ours.describe_images()}, against {theirs.describe_images()}); compare exports "
            "of the same test split"
        )
    return paired_comparison(ours, theirs, resamples=resamples, seed=seed)


def export_predictions(path: str | Path) -> TestPredictions:
    """The test predictions of an export given as its folder (holding its predictions or a
    `.keras` model), its `.keras` model file or its `.npz` predictions file.

    Raises:
        ModelError: `path` is missing, is none of those, or has no readable test predictions.
    """
    path = Path(path)
    expected = "expected a folder written by tuning export, or a .keras file beside its predictions"
    if not path.exists():
        raise ModelError(f"{path}: no such file or folder; {expected}")
    is_export = path.is_dir() and ((path / PREDICTIONS_FILE).is_file() or any(path.glob("*.keras")))
    if not (is_export or (path.is_file() and path.suffix in (".keras", ".npz"))):
        raise ModelError(f"{path}: not an export folder or model file; {expected}")
    return TestPredictions.load(path)
