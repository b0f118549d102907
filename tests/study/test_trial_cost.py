"""A trial's cost and the [objective] limits, as Optuna, its TPE sampler and optuna-dashboard
see them: ask/tell and hand-made costs, nothing trained; the dashboard seen in Chromium."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.samplers._tpe.sampler import _split_trials
from optuna.trial import TrialState
from optuna_dashboard._serializer import serialize_frozen_trial

from tests import test_dashboard
from tests.helpers import add_costed_trial
from tests.live import dashboard, get_json
from tuning.errors import ConfigError
from tuning.records import Latency, ModelCost, TrialKey
from tuning.storage import open_storage
from tuning.study.trial_cost import (
    apply_limits,
    check_give_up,
    infeasible_streak,
    is_feasible,
    known_cost,
    record_cost,
    trial_costs,
)

browser = test_dashboard.browser  # the same headless Chromium, once for this module
LATENCY = Latency(1.25, 0.05, 2, 25, 3, 0.1, 0.01)


def test_a_cost_is_stored_by_name_and_read_back_as_costs() -> None:
    study = optuna.create_study()
    trial = study.ask()
    record_cost(trial, ModelCost(params=370_454, flops=22_756_816, latency=LATENCY))
    stored = study.trials[0]
    assert stored.user_attrs == {
        "param_count": 370_454,
        "flops": 22_756_816,
        "latency_ms": 1.25,
        "latency_b256_ms": 0.05,
        "latency_threads": 2,
    }
    assert trial_costs(stored) == {"params": 370_454, "flops": 22_756_816, "latency_ms": 1.25}
    unknown = study.ask()
    record_cost(unknown, ModelCost(params=10, flops=None, unknown_layers=("MyLayer",)))
    assert trial_costs(study.trials[1]) == {"params": 10}  # unknown: absent, never a guess
    assert study.trials[1].user_attrs["flops_unknown"] == ["MyLayer"]


def test_limits_are_optuna_constraints_in_both_forms_and_tpe_sees_infeasible_trials() -> None:
    study = optuna.create_study(direction="maximize")
    over, under = study.ask(), study.ask()
    broken = apply_limits(over, ModelCost(params=500, flops=3000), {"flops": 1000, "params": 1000})
    assert broken == ["flops 3,000 > 1,000"]
    assert apply_limits(under, ModelCost(params=500, flops=800), {"flops": 1000}) == []
    study.tell(over, state=TrialState.PRUNED)  # as the objective stops it, before training
    study.tell(under, 0.9)
    over_t, under_t = study.trials
    # Optuna 5's form (read by TPE and best_trial) and the list optuna-dashboard 0.21 reads.
    assert over_t.system_attrs["constraints:flops"] == pytest.approx(2.0)
    assert over_t.system_attrs["constraints"] == [pytest.approx(2.0), pytest.approx(-0.5)]
    assert not is_feasible(over_t) and is_feasible(under_t)
    # TPE puts the infeasible trial with the worst, whatever its state.
    below, above = _split_trials(study, [over_t, under_t], n_below=1)
    assert below == [under_t] and above == [over_t]
    # The dashboard's serializer hands the browser the list, so its charts can mark it.
    assert serialize_frozen_trial(study._study_id, over_t, {})["constraints"] == [
        pytest.approx(2.0),
        pytest.approx(-0.5),
    ]


def test_a_limit_on_an_unknown_cost_is_one_line_naming_the_layers() -> None:
    cost = ModelCost(params=10, flops=None, unknown_layers=("MyLayer", "Lambda (operation)"))
    with pytest.raises(ConfigError) as info:
        known_cost(cost, "flops", trial=4)
    assert str(info.value) == (
        "trial #4's flops is unknown (layers without a FLOP count: MyLayer, Lambda (operation)), "
        "so the [objective] cannot use it; remove flops from 'objective.limits' and "
        "'objective.directions'"
    )


def test_a_run_gives_up_after_so_many_infeasible_trials_in_a_row_naming_the_cheapest() -> None:
    study = optuna.create_study(direction="maximize")
    add_costed_trial(study, [0.9], rungs=1, flops=900, limit=1000)  # feasible: ends no streak
    for flops in (5000, 1234, 3000):
        add_costed_trial(study, [], rungs=1, flops=flops, limit=1000)
    streak = infeasible_streak(study.trials)
    assert [t.number for t in streak] == [1, 2, 3]
    check_give_up(study.trials, {"flops": 1000}, 4)  # three in a row: not yet
    with pytest.raises(ConfigError) as info:
        check_give_up(study.trials, {"flops": 1000}, 3)
    assert str(info.value) == (
        "no network in the space met flops <= 1,000 in 3 trials in a row; the cheapest had "
        "1,234 flops (trial #2); raise the limit in 'objective.limits' or give the space "
        "smaller networks"
    )
    add_costed_trial(study, [0.9], rungs=1, flops=999, limit=1000)
    assert infeasible_streak(study.trials) == []


def test_the_dashboard_marks_trials_over_a_limit_as_infeasible_and_never_best(
    browser: Any, tmp_path: Path
) -> None:
    """optuna-dashboard 0.21 reads only the `constraints` list, which the objective writes
    beside Optuna 5's form: then its charts mark the seed network, scored over the limit as the
    yardstick, as infeasible; the storage (one direction) and `tuning dashboard` (two) keep it
    out of the best trials; and a trial stopped for its cost says why."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(
        study_name="small", storage=open_storage(storage), direction="maximize"
    )
    study.set_metric_names(["CV accuracy"])
    baseline = add_costed_trial(study, [0.99], rungs=1, flops=22_756_816, limit=4_551_363)
    small = add_costed_trial(study, [0.97], rungs=1, flops=3_000_000, limit=4_551_363)
    stopped = add_costed_trial(study, [], rungs=1, flops=9_000_000, limit=4_551_363)
    assert not is_feasible(baseline) and study.best_trial == small
    pareto = optuna.create_study(
        study_name="pareto", storage=open_storage(storage), directions=["maximize", "minimize"]
    )
    for score, flops in ((0.99, 22_756_816), (0.98, 3_000_000), (0.97, 1_000_000)):
        add_costed_trial(pareto, [score], rungs=1, flops=flops, limit=4_551_363)
    with dashboard(tmp_path, storage) as server:
        _, front = get_json(server.url + "api/studies/2")
        assert [t["number"] for t in front["best_trials"]] == [1, 2]  # not the seed network
        status, detail = get_json(server.url + "api/studies/1")
        assert status == 200
        assert [t["constraints"][0] > 0 for t in detail["trials"]] == [True, False, True]
        assert [t["number"] for t in detail["best_trials"]] == [small.number]
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{server.url}dashboard/studies/1")
            # The timeline's legend and the intermediate values' trace name the baseline.
            page.get_by_text("Infeasible", exact=True).first.wait_for()
            page.get_by_text("trial #0 (infeasible)", exact=True).first.wait_for()
            page.get_by_text(f"Best Trial (number={small.number})").wait_for()
            page.screenshot(path=_output("dashboard-limits.png"), full_page=True)
            page.goto(f"{server.url}dashboard/studies/1/trials?numbers={stopped.number}")
            page.get_by_text("User Attributes", exact=True).wait_for()
            body = page.inner_text("body")
            reason = f"{TrialKey.INFEASIBLE} over the limit: flops 9,000,000 > 4,551,363"
            assert "Pruned" in body and reason in body
            page.goto(f"{server.url}dashboard/studies/2")
            page.get_by_text("Best Trials", exact=True).wait_for()
            page.get_by_text("Trial 1", exact=True).wait_for()
            assert page.get_by_text("Trial 0", exact=True).count() == 0
            page.screenshot(path=_output("dashboard-limits-pareto.png"), full_page=True)
        finally:
            page.close()


def _output(name: str) -> Path:
    test_dashboard.OUTPUT.mkdir(parents=True, exist_ok=True)
    return test_dashboard.OUTPUT / name
