"""The transfer report's statistics."""

from __future__ import annotations

import pytest

from tuning.training.cv import wilson_interval


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(27, 27)
    assert high == 1.0 and low == pytest.approx(0.8754, abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
