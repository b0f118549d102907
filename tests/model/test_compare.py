"""Paired statistics between two exports on the same test images, against counts worked by
hand, and `tuning compare` on real prediction files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tuning.cli import main
from tuning.errors import ModelError
from tuning.model.compare import compare_exports, mean_difference, paired_comparison
from tuning.model.predictions import TestPredictions, test_data_sha256


def predictions(wrong: np.ndarray, *, sha: str = "same", classes: int = 3) -> TestPredictions:
    """Predictions that get exactly the images in `wrong` wrong (labels all 0)."""
    labels = np.zeros(len(wrong), dtype=np.int64)
    probs = np.full((len(wrong), classes), 0.1)
    probs[:, 0] = 0.8
    probs[wrong] = [0.1, 0.8, 0.1]
    return TestPredictions(labels, probs, sha)


def pair(
    n: int, only_model: int, only_reference: int, both: int = 0
) -> tuple[TestPredictions, TestPredictions]:
    model, reference = np.zeros(n, bool), np.zeros(n, bool)
    model[:only_model] = True
    reference[only_model : only_model + only_reference] = True
    model[n - both :] = reference[n - both :] = both > 0
    return predictions(model), predictions(reference)


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_images() -> None:
    # 0 against 6 discordant: two-sided exact p = 2 * 0.5**6.
    result = paired_comparison(*pair(1000, 0, 6, both=4))
    assert (result.errors, result.reference_errors) == (4, 10)
    assert (result.only_model_wrong, result.only_reference_wrong) == (0, 6)
    assert result.p_value == pytest.approx(2 * 0.5**6)
    # 3 against 3: the most balanced split, p = 1.
    assert paired_comparison(*pair(1000, 3, 3)).p_value == pytest.approx(1.0)


def test_the_bootstrap_interval_matches_the_binomial_counts_it_resamples() -> None:
    """With 6 images only the reference got wrong in 1,000, a resample's difference is
    Binomial(1000, 0.006): its 2.5% and 97.5% quantiles are 2 and 11."""
    result = paired_comparison(*pair(1000, 0, 6), resamples=20_000, seed=3)
    expected = stats.binom.ppf([0.025, 0.975], 1000, 0.006)
    assert tuple(expected) == (2.0, 11.0)
    assert result.interval.low == pytest.approx(expected[0], abs=1)
    assert result.interval.high == pytest.approx(expected[1], abs=1)
    assert result.fewer == 6 and result.shown
    assert "20000 resamples" in result.interval.method


def test_the_issues_counts_give_the_issues_figures_and_are_not_called_a_gain() -> None:
    """23 digits only the baseline got wrong, 14 only the winner: p = 0.19, interval -3 to 21."""
    result = paired_comparison(*pair(10_000, 14, 23, both=24))
    assert round(result.p_value, 2) == 0.19
    assert (result.interval.low, result.interval.high) == (-3.0, 21.0)
    assert not result.shown
    assert result.sentence() == (
        "38 errors against 47: 9 fewer, 95% interval -3 to 21, McNemar p = 0.19: "
        "not shown to be better"
    )


def test_same_seed_same_interval_and_nothing_discordant_is_zero() -> None:
    a = paired_comparison(*pair(500, 2, 9), seed=7)
    assert a == paired_comparison(*pair(500, 2, 9), seed=7)
    same = paired_comparison(*pair(500, 0, 0, both=5))
    assert (same.interval.low, same.interval.high, same.p_value) == (0.0, 0.0, 1.0)
    assert same.sentence().endswith("this model is not shown to differ from the baseline")


def test_the_mean_difference_of_seeds_is_welchs_interval() -> None:
    """[38, 40, 42] against [44, 48, 52]: difference 8, variances 4 and 16, so a standard
    error of sqrt(4/3 + 16/3) on Welch's (20/3)^2 / ((4/3)^2/2 + (16/3)^2/2) = 2.94 degrees of
    freedom (Student's t would take 4)."""
    result = mean_difference([38, 40, 42], [44, 48, 52])
    assert result.difference == 8.0 and result.interval is not None
    df = (20 / 3) ** 2 / ((4 / 3) ** 2 / 2 + (16 / 3) ** 2 / 2)
    half = stats.t.ppf(0.975, df) * np.sqrt(20 / 3)
    assert result.interval.low == pytest.approx(8 - half)
    assert result.interval.high == pytest.approx(8 + half)
    # -0.3 to 16.3: Student's t (4 degrees of freedom) would have claimed 0.8 to 15.2.
    assert not result.shown and result.sentence().endswith("no difference shown")
    assert mean_difference([38, 40, 42], [46, 48, 50]).sentence().endswith("shown to be better")
    assert mean_difference([40], [48]).interval is None  # one seed: no spread, no interval


def test_compare_refuses_two_different_test_sets(tmp_path: Path) -> None:
    model, reference = pair(100, 1, 3)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    TestPredictions(model.labels, model.probabilities, "one").save(a)
    TestPredictions(reference.labels, reference.probabilities, "two").save(b)
    with pytest.raises(ModelError, match=f"{a} and {b} were tested on different test data"):
        compare_exports(a, b)


def test_cli_compare_prints_both_scores_and_the_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = np.zeros((100, 28, 28, 1), np.uint8), np.zeros(100, np.int64)
    sha = test_data_sha256(x, y)
    model, reference = pair(100, 1, 6)
    for name, p in (("a", model), ("b", reference)):
        (tmp_path / name).mkdir()
        TestPredictions(p.labels, p.probabilities, sha).save(tmp_path / name)
    (tmp_path / "a" / "model.keras").write_bytes(b"a model")  # compare reads only beside it
    assert main(["compare", str(tmp_path / "a" / "model.keras"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"A {tmp_path / 'a' / 'model.keras'}: 1 errors in 100 (accuracy 0.9900)"
    assert out[2] == "  only A wrong: 1, only B wrong: 6 (McNemar exact p = 0.12)"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["errors"], data["reference_errors"], data["resamples"]) == (1, 6, 10_000)


def one_error_line(capsys: pytest.CaptureFixture[str], *argv: Path) -> str:
    """`tuning compare` on `argv`: it fails with one line on stderr, returned."""
    assert main(["compare", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_cli_compare_names_a_path_that_is_not_an_export_and_what_it_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export"
    export.mkdir()
    TestPredictions(np.zeros(4, np.int64), np.full((4, 2), 0.5), "same").save(export)
    picture = tmp_path / "seven.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "test_predictions.npz").write_bytes((export / "test_predictions.npz").read_bytes())
    expected = "expected a folder written by tuning export, or a .keras file beside its predictions"
    # A picture beside predictions is still not an export: nothing is compared.
    line = one_error_line(capsys, picture, export)
    assert line == f"error: {picture}: not an export folder or model file; {expected}"
    empty = tmp_path / "photos"
    empty.mkdir()
    line = one_error_line(capsys, export, empty)
    assert line == f"error: {empty}: not an export folder or model file; {expected}"
    missing = tmp_path / "no-such-export"
    line = one_error_line(capsys, missing, export)
    assert line == f"error: {missing}: no such file or folder; {expected}"


def test_cli_compare_of_an_export_without_predictions_says_to_export_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old-export"
    old.mkdir()
    (old / "model.keras").write_bytes(b"a model")
    for given in (old, old / "model.keras"):
        line = one_error_line(capsys, given, given)
        assert line.startswith(f"error: {old / 'test_predictions.npz'}: no test predictions;")
        assert line.endswith("export again)")
