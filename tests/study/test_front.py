"""The accuracy-against-cost front of a study, driven with ask()/tell(): no training."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from matplotlib.image import imread

from tests.helpers import ROOT
from tuning.errors import ConfigError
from tuning.records import TrialKey
from tuning.study.config import load_spec
from tuning.study.front import default_cost, describe_front, draw_front, front_points, load_front


def scored_study(
    points: list[tuple[float, int, bool]],
    *,
    flops_limit: float | None = None,
    storage: str | None = None,
    name: str | None = None,
) -> optuna.Study:
    """A study whose trials (distinct networks) each finished rung 0 with (accuracy, flops, is
    the baseline), under `flops_limit` as `tuning.study.trial_cost` stores a limit."""
    study = optuna.create_study(direction="maximize", storage=storage, study_name=name)
    for number, (accuracy, flops, baseline) in enumerate(points):
        study.enqueue_trial({"network": number})
        trial = study.ask()
        trial.suggest_int("network", 0, len(points))
        trial.set_user_attr(TrialKey.FLOPS, flops)
        if baseline:
            trial.set_user_attr(TrialKey.BASELINE, "seed network")
        if flops_limit is not None:
            trial.set_constraint("flops", (flops - flops_limit) / flops_limit)
        trial.report(accuracy, step=1)
        study.tell(trial, accuracy)
    return study


def test_front_keeps_only_trials_no_other_beats_on_both_and_marks_the_baseline(
    tmp_path: Path,
) -> None:
    study = scored_study(
        [
            (0.990, 22_756_816, True),  # the seed network: most accurate, dearest
            (0.985, 4_000_000, False),  # on the front
            (0.980, 5_000_000, False),  # beaten by #1 on both
            (0.970, 100_000, False),  # on the front: the cheapest
            (0.985, 4_500_000, False),  # as accurate as #1, dearer: beaten
        ]
    )
    points = front_points(study.trials, cost="flops")
    assert [p.trial for p in points] == [3, 1, 4, 2, 0]  # cheapest first
    assert {p.trial for p in points if p.on_front} == {0, 1, 3}
    assert [p.trial for p in points if p.baseline] == [0]
    lines = describe_front(points, cost="flops")
    assert len(lines) == 4 and "seed network" in lines[-1]

    png = draw_front(points, tmp_path / "front.png", cost="flops", title="front")
    assert imread(png).shape[0] > 100


def test_a_trial_over_a_limit_is_off_the_front_but_the_baseline_is_still_drawn() -> None:
    study = scored_study(
        [(0.99, 22_756_816, True), (0.98, 3_000_000, False), (0.985, 5_000_000, False)],
        flops_limit=4_551_363,
    )
    points = front_points(study.get_trials(), cost="flops")
    assert [(p.trial, p.on_front, p.baseline) for p in points] == [
        (1, True, False),
        (0, False, True),
    ]


def test_a_stored_study_is_read_against_the_cost_its_study_file_names(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "studies" / "mnist_small.toml")
    assert default_cost(spec) == "flops"  # its limit
    assert default_cost(load_spec(ROOT / "studies" / "mnist_pareto.toml")) == "flops"  # direction
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    scored_study([(0.99, 22_756_816, True), (0.98, 3_000_000, False)], storage=storage,
                 name=spec.name)  # fmt: skip
    points, cost = load_front(spec, storage=storage)
    assert cost == "flops" and [p.trial for p in points] == [1, 0]
    with pytest.raises(ConfigError, match="cost must be one of params, flops, latency_ms"):
        load_front(spec, storage=storage, cost="watts")
