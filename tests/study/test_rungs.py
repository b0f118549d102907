"""The fidelity ladder as Optuna sees it, driven with ask/tell: nothing is trained here."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import add_rung_trial
from tuning.study.rungs import (
    best_at_highest_rung,
    highest_rung,
    make_pruner,
    rung_correlations,
    rung_scores,
    rung_step,
    step_rung,
)


def test_each_rung_has_its_own_step_and_steps_map_back() -> None:
    steps = [rung_step(r) for r in range(5)]
    assert steps == [1, 3, 9, 27, 81] and len(set(steps)) == 5
    assert [step_rung(s) for s in steps] == [0, 1, 2, 3, 4]
    assert [step_rung(s) for s in (0, 2, 4, 8, 10, 28)] == [None] * 6


def climb(study: optuna.Study, scores: list[float]) -> optuna.trial.FrozenTrial:
    """Report `scores` rung by rung as the objective does; stop where the pruner says."""
    trial = study.ask()
    for rung, score in enumerate(scores):
        trial.report(score, step=rung_step(rung))
        if rung < 2 and trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return study.trials[trial.number]
    study.tell(trial, scores[-1])
    return study.trials[trial.number]


def test_successive_halving_promotes_the_best_third_and_stops_the_rest() -> None:
    study = optuna.create_study(
        direction="maximize", pruner=make_pruner("successive_halving", rungs=3)
    )
    trials = [climb(study, [0.90 + i / 1000, 0.95, 0.97]) for i in range(9)]
    # Rung 0 scores rise trial by trial, so each new trial is the best so far and climbs, ...
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # ... while a trial below the top third of rung 0 stops there, having reported one step.
    weak = climb(study, [0.5, 0.99, 0.99])
    assert weak.state == TrialState.PRUNED and list(weak.intermediate_values) == [1]
    assert highest_rung(weak) == 0 and rung_scores(weak) == {0: 0.5}


def test_hyperband_brackets_stop_weak_trials_at_rung_boundaries_only() -> None:
    study = optuna.create_study(direction="maximize", pruner=make_pruner("hyperband", rungs=3))
    for i in range(9):
        climb(study, [0.90 + i / 1000, 0.95 + i / 1000, 0.97 + i / 1000])
    weak = [climb(study, [0.5, 0.5, 0.5]) for _ in range(9)]
    assert any(t.state == TrialState.PRUNED for t in weak)
    for trial in study.trials:  # every trial reported a prefix of steps 1, 3, 9: no collisions
        steps = sorted(trial.intermediate_values)
        assert steps == [1, 3, 9][: len(steps)]


def test_best_trial_is_taken_at_the_highest_rung_any_trial_reached() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    # Trial 0 shines on the cheap rung and stops there; trials 1 and 2 reach rung 2.
    for scores in ([0.999], [0.95, 0.96, 0.970], [0.94, 0.97, 0.975]):
        add_rung_trial(study, scores, rungs=3)
    running = study.ask()
    for rung, score in enumerate([0.99, 0.99, 0.999]):
        running.report(score, step=rung_step(rung))  # not finished: never picked
    best = best_at_highest_rung(study.trials)
    assert best is not None and best.number == 2 and highest_rung(best) == 2
    assert best_at_highest_rung(study.trials[:1]).number == 0  # type: ignore[union-attr]
    assert best_at_highest_rung([]) is None


def test_rank_correlation_between_rungs_comes_from_the_trials_that_reached_both() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    table = [
        [0.90, 0.93, 0.96],
        [0.91, 0.92, 0.97],  # rungs 0 and 1 disagree on this pair ...
        [0.92, 0.94, 0.98],
        [0.93, 0.95, 0.99],
        [0.80],  # pruned at rung 0: counts for no pair
    ]
    for scores in table:
        add_rung_trial(study, scores, rungs=3)
    low, high = rung_correlations(study.trials, rungs=3)
    assert (low.lower, low.upper, low.trials) == (0, 1, 4)
    assert low.rho == pytest.approx(0.8)  # one swapped pair among four trials
    # Exact with so few trials: 8 of the 24 orderings of 4 ranks have |rho| >= 0.8.
    assert low.p_value == pytest.approx(8 / 24)
    assert high.rho == pytest.approx(0.8) and high.trials == 4
    assert "Spearman +0.80 over 4 trials" in low.describe()
    few = rung_correlations(study.trials[:2], rungs=3)[0]
    assert few.rho is None and "too few" in few.describe()


def test_a_perfect_ranking_of_five_trials_has_the_exact_p_value_not_the_t_approximation() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    for score in (0.90, 0.91, 0.92, 0.93, 0.94):
        add_rung_trial(study, [score, score + 0.01], rungs=2)
    (correlation,) = rung_correlations(study.trials, rungs=2)
    assert correlation.rho == pytest.approx(1.0)
    assert correlation.p_value == pytest.approx(2 / 120)  # both perfect orderings of 5 ranks
    assert "(p = 0.017)" in correlation.describe()


def test_unknown_pruner_is_refused() -> None:
    with pytest.raises(ValueError, match="Received: 'asha'"):
        make_pruner("asha", rungs=3)
