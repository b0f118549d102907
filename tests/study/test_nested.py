"""Nested CV of a whole study, for data without a test split (`tuning nested`): every image is
predicted once by a model whose search and training never saw it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import letter_study
from tuning.cli import main
from tuning.errors import TuningError
from tuning.study.config import load_spec
from tuning.study.nested import nested_score
from tuning.training.cv import wilson_interval


def test_every_image_is_scored_once_by_a_search_that_never_saw_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = letter_study(tmp_path)
    code = main(["nested", str(path), "--folds", "2", "--classes", "alpha,beta", "--json"])
    printed = capsys.readouterr()
    assert code == 0
    score = json.loads(printed.out)
    assert score["class_names"] == ["alpha", "beta"] and score["images"] == 12
    folds = score["folds"]
    assert sum(f["held_out"] for f in folds) == 12  # each image held out exactly once
    assert score["correct"] == round(sum(f["accuracy"] * f["held_out"] for f in folds))
    assert tuple(score["interval"]) == wilson_interval(score["correct"], 12)
    assert "outer fold 1/2: accuracy" in printed.err and "outer fold 2/2" in printed.err


def test_fewer_than_two_outer_folds_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = load_spec(letter_study(tmp_path))
    with pytest.raises(TuningError, match="outer_folds: must be in 2..20"):
        nested_score(spec, outer_folds=1)
    assert main(["nested", str(spec.path), "--folds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --folds: must be in 2..20. Received: outer_folds=1"
