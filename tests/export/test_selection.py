"""Which trial an export takes: a trial named, or a rule that picks a point on the front among
the feasible trials at the highest rung reached; and the plan records what chose it. Trials
are made with ask/tell, nothing is trained."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tests.helpers import SMOKE, add_costed_trial, untrained_seed_study
from tuning.errors import ExportError
from tuning.export.plan import plan_export
from tuning.export.selection import pick_trial
from tuning.study.config import load_spec
from tuning.study.objective_config import PickRule

FEWEST_FLOPS = PickRule(cost="flops", within_points=0.1)


def test_a_rule_picks_the_cheapest_trial_within_so_many_points_of_the_best() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    table = [  # (rung scores, FLOPs, limit)
        ([0.90, 0.9950], 22_756_816, None),  # the most accurate
        ([0.90, 0.9941], 4_000_000, None),  # 0.09 points below: near enough
        ([0.90, 0.9940], 3_000_000, None),  # exactly 0.1 points below: still near enough
        ([0.90, 0.9939], 1_000_000, None),  # 0.11 points below: too far
        ([0.99], 10_000, None),  # stopped at rung 0: never picked
        ([0.90, 0.9949], 500_000, 400_000),  # over a limit: never picked
    ]
    for scores, flops, limit in table:
        add_costed_trial(study, scores, rungs=2, flops=flops, limit=limit)
    assert pick_trial(study.trials, PickRule()).number == 0  # type: ignore[union-attr]
    assert pick_trial(study.trials, FEWEST_FLOPS).number == 2  # type: ignore[union-attr]
    wide = PickRule(cost="params", within_points=1.0)
    assert pick_trial(study.trials, wide).number == 3  # type: ignore[union-attr]
    assert pick_trial([], FEWEST_FLOPS) is None


def test_a_rule_on_a_cost_no_trial_recorded_is_one_line() -> None:
    study = optuna.create_study(direction="maximize")
    add_costed_trial(study, [0.99], rungs=1, flops=1000)
    with pytest.raises(ExportError) as info:
        pick_trial(study.trials, PickRule(cost="latency_ms", within_points=0.1))
    assert str(info.value) == (
        "pick: no trial within 0.1 points of the best has its latency_ms stored (trials run "
        "before costs were recorded); pick by 'best' or --trial. "
        "Received: pick='fewest latency_ms within 0.1 points'"
    )


def test_the_plan_records_what_chose_its_trial_and_refuses_a_trial_with_a_rule(
    tmp_path: Path, mnist_npz: Path
) -> None:
    storage = untrained_seed_study(tmp_path, mnist_npz)
    spec = load_spec(SMOKE)
    best = plan_export(spec, storage=storage, data=mnist_npz, out=tmp_path / "a")
    assert (best.trial.number, best.command.chosen_by) == (0, "best")
    named = plan_export(spec, storage=storage, data=mnist_npz, out=tmp_path / "b", trial=0)
    assert named.command.chosen_by == "trial=0" and named.command.pick_override is None
    with pytest.raises(ExportError, match="^pick: give a trial or a rule that picks one, not"):
        plan_export(spec, storage=storage, data=mnist_npz, trial=0, pick="best")
    with pytest.raises(ExportError) as info:
        plan_export(spec, storage=storage, data=mnist_npz, pick="cheapest")
    assert str(info.value).startswith('pick: must be "best" or "fewest <cost> within <x> points"')
    # The seed trial of this study predates costs: a rule on one says so.
    with pytest.raises(ExportError, match="has its flops stored"):
        plan_export(spec, storage=storage, data=mnist_npz, pick="fewest flops within 1 point")
