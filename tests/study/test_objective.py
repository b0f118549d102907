"""The objective under an `[objective]` table: each trial's cost measured before it trains, limits
that stop a network for free, a run that gives up on a limit no network meets, two directions
with the dominance stop, and what the summary and the dashboard note say. Tiny networks, one or
two epochs on 200 images."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import SMOKE, add_costed_trial
from tests.study.test_run import TINY_RECIPE, TWO_RUNGS, TinyHyperModel, spec_with, tiny_data
from tuning.errors import ConfigError, StudyMismatchError
from tuning.records import TrialKey, library_versions
from tuning.study.config import StudySpec, load_spec
from tuning.study.create import open_study
from tuning.study.objective import RungData, make_objective
from tuning.study.objective_config import ObjectiveSettings
from tuning.study.progress import summary
from tuning.study.run import run_study
from tuning.study.rungs import best_at_highest_rung, rung_scores
from tuning.study.trial_cost import is_feasible

TINY_FLOPS = 17_268  # Rescaling 2 x 784, Dense 2 x 7,840 + 10 bias + 10 softmax


def aiming(spec: StudySpec, **objective: Any) -> StudySpec:
    """`spec` with `[objective]` set to `objective`, and no `[search] pruner` (its default)."""
    search = dataclasses.replace(spec.search, pruner=None)
    return dataclasses.replace(spec, objective=ObjectiveSettings(**objective), search=search)


def run(spec: StudySpec, study: optuna.Study, n_trials: int = 1) -> list[str]:
    """Run `n_trials` of the tiny network under `spec`'s objective; what it said on the way."""
    x, y = tiny_data()
    said: list[str] = []
    objective = make_objective(
        TinyHyperModel(),
        [RungData(rung, x, y) for rung in spec.fidelity.ladder],
        spec=spec,
        versions=library_versions(),
        on_progress=said.append,
    )
    study.optimize(objective, n_trials=n_trials)
    return said


@pytest.mark.parametrize("limit", [1_000, 100_000])
def test_a_trials_cost_is_measured_first_and_a_network_over_a_limit_never_trains(
    limit: int,
) -> None:
    spec = aiming(spec_with(rungs=TWO_RUNGS, max_epochs=2), limits={"flops": limit})
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(TINY_RECIPE)
    said = run(spec, study)
    trial = study.trials[0]
    attrs = trial.user_attrs
    assert (attrs["param_count"], attrs["flops"], attrs["latency_threads"] >= 1) == (
        7850,
        TINY_FLOPS,
        True,
    )
    assert attrs["latency_ms"] > 0 and attrs["latency_b256_ms"] > 0
    assert said[0].startswith("trial 0: 7,850 params, 17.3 kFLOP, ")  # the progress line
    assert trial.constraints["flops"] == pytest.approx((TINY_FLOPS - limit) / limit)
    if limit > TINY_FLOPS:
        assert trial.state == TrialState.COMPLETE and is_feasible(trial)
        return
    # Over the limit: stopped before any training, and says why.
    assert trial.state == TrialState.PRUNED and not is_feasible(trial)
    assert trial.user_attrs["infeasible"] == "over the limit: flops 17,268 > 1,000"
    assert said[-1] == "trial 0: infeasible, over the limit: flops 17,268 > 1,000"
    assert TrialKey.RUNGS not in trial.user_attrs and TrialKey.TRAIN_SECONDS not in trial.user_attrs
    assert trial.intermediate_values == {} and trial.value is None


def test_the_baseline_over_a_limit_is_scored_anyway_but_is_never_the_best() -> None:
    spec = aiming(spec_with(rungs=TWO_RUNGS, max_epochs=2), limits={"params": 100})
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(TINY_RECIPE, user_attrs={"baseline": "seed network"})
    run(spec, study)
    baseline = study.trials[0]
    assert baseline.state == TrialState.COMPLETE and sorted(baseline.intermediate_values) == [1, 3]
    assert baseline.user_attrs["infeasible"] == (
        "over the limit: params 7,850 > 100 (scored anyway: the baseline)"
    )
    assert best_at_highest_rung(study.trials) is None  # the yardstick, not a candidate


def test_a_run_stops_after_so_many_infeasible_trials_in_a_row_saying_which_limit(
    storage_url: str, mnist_npz: Path
) -> None:
    smoke = load_spec(SMOKE)
    spec = aiming(
        dataclasses.replace(smoke, enqueue_seed=False), limits={"flops": 1000}, give_up_after=2
    )
    with pytest.raises(ConfigError) as info:
        run_study(spec, storage=storage_url, data=mnist_npz, n_trials=5)
    message = str(info.value)
    assert message.startswith("no network in the space met flops <= 1,000 in 2 trials in a row")
    assert "; the cheapest had " in message and "\n" not in message
    trials = optuna.load_study(study_name="smoke", storage=storage_url).trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2  # stopped, none trained
    assert all(TrialKey.RUNGS not in t.user_attrs for t in trials)


def test_resuming_under_another_objective_is_refused_and_nothing_is_lost(
    storage_url: str,
) -> None:
    smoke = load_spec(SMOKE)
    study, _ = open_study(smoke, storage=storage_url, data_sha256="a" * 64)
    study.tell(study.ask(), 0.9)
    assert "objective" not in study.user_attrs["protocol"]  # stored as before it existed
    for objective in ({"directions": ("accuracy", "flops")}, {"limits": {"flops": 5e6}}):
        with pytest.raises(StudyMismatchError) as info:
            open_study(aiming(smoke, **objective), storage=storage_url, data_sha256="a" * 64)
        assert str(info.value).startswith(
            f"study 'smoke' in {storage_url} (created from {SMOKE}) was made to maximise "
            "accuracy, but this run asks to maximise accuracy"
        )
    resumed, _ = open_study(smoke, storage=storage_url, data_sha256="a" * 64)
    assert [t.value for t in resumed.trials] == [0.9]


def test_two_directions_return_accuracy_and_cost_and_the_dominance_stop_prunes() -> None:
    spec = aiming(spec_with(rungs=TWO_RUNGS, max_epochs=2), directions=("accuracy", "flops"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial(TINY_RECIPE)
    run(spec, study)
    climbed = study.trials[0]
    assert climbed.state == TrialState.COMPLETE and climbed.intermediate_values == {}
    scores = rung_scores(climbed)  # from the `rungs` attribute: Optuna refuses reports here
    assert sorted(scores) == [0, 1] and climbed.values == [scores[1], TINY_FLOPS]
    # One cheaper network that scored higher on rung 0 is not enough to stop the next one ...
    add_costed_trial(study, [1.0], rungs=2, flops=100)
    study.enqueue_trial(TINY_RECIPE)
    run(spec, study)
    assert study.trials[-1].state == TrialState.COMPLETE
    # ... two stop it there ...
    add_costed_trial(study, [1.0], rungs=2, flops=100)
    for attrs in ({}, {"baseline": "seed network"}):
        study.enqueue_trial(TINY_RECIPE, user_attrs=attrs)
        run(spec, study)
    stopped, baseline = study.trials[-2:]
    assert stopped.state == TrialState.PRUNED and sorted(rung_scores(stopped)) == [0]
    assert len(stopped.user_attrs[TrialKey.RUNGS]) == 1  # the rung it finished is kept
    # ... but not the baseline, which climbs every rung as before.
    assert baseline.state == TrialState.COMPLETE and sorted(rung_scores(baseline)) == [0, 1]


def test_the_summary_and_the_note_show_the_objective_and_the_pareto_front(
    storage_url: str,
) -> None:
    from tuning.study.note import write_study_note

    spec = aiming(load_spec(SMOKE), directions=("accuracy", "flops"), limits={"params": 2e6})
    study, _ = open_study(spec, storage=storage_url, data_sha256="a" * 64)
    assert study.metric_names == ["CV accuracy", "flops"]
    for scores, flops in (([0.99], 22_756_816), ([0.98], 3_000_000), ([0.97], 5_000_000)):
        add_costed_trial(study, scores, rungs=1, flops=flops)
    text = summary(study, storage="db", study_file="s.toml")
    assert "Objective: maximise accuracy and minimise flops, with params <= 2,000,000" in text
    assert "Pareto front at rung 0 (2 points; cheapest first):" in text
    assert "  #1    CV accuracy 0.9800  300,000 params, 3.0 MFLOP" in text
    note = write_study_note(study)
    assert "**Maximise accuracy and minimise flops, with params <= 2,000,000.**" in note
    assert "the dominance stop" in note and "0 of 3 finished trial(s) so far" in note
    assert "| 1 | 0.9800 | 300,000 | 3.0 MFLOP | - |" in note
    assert "| 2 | 0.9700" not in note  # dominated by trial 1
