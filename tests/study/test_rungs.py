"""The fidelity ladder as Optuna sees it, driven with ask/tell: nothing is trained here."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import add_costed_trial, add_rung_trial
from tuning.study.rungs import (
    best_at_highest_rung,
    dominated_by,
    highest_rung,
    make_pruner,
    pareto_front,
    ranked_at_highest_rung,
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


def pareto_study() -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize"])


def test_a_two_direction_trial_reads_its_rung_scores_from_its_rungs_attribute() -> None:
    study = pareto_study()
    # Optuna refuses reports in a study of two directions: the scores are the user attribute.
    with pytest.raises(NotImplementedError):
        study.ask().report(0.5, step=1)
    done = add_costed_trial(study, [0.90, 0.95], rungs=2, flops=1000)
    stopped = add_costed_trial(study, [0.80], rungs=2, flops=500)
    assert done.intermediate_values == {} and rung_scores(done) == {0: 0.90, 1: 0.95}
    assert stopped.state == TrialState.PRUNED and rung_scores(stopped) == {0: 0.80}
    assert best_at_highest_rung(study.trials) == done  # the highest rung reached decides


def test_the_best_is_the_best_feasible_trial_even_when_an_infeasible_one_scored_higher() -> None:
    study = optuna.create_study(direction="maximize")
    # The seed network over the limit is scored anyway (the yardstick), best of all ...
    over = add_costed_trial(study, [0.99, 0.995], rungs=2, flops=5000, limit=1000)
    under = add_costed_trial(study, [0.97, 0.98], rungs=2, flops=800, limit=1000)
    low = add_costed_trial(study, [0.99], rungs=2, flops=900, limit=1000)
    assert over.constraints["flops"] == pytest.approx(4.0) and under.constraints["flops"] < 0
    # ... but never the best: "best" is the best feasible trial at the highest rung reached.
    assert ranked_at_highest_rung(study.trials) == [under]
    assert best_at_highest_rung(study.trials) == under
    assert best_at_highest_rung([over, low]) == low  # among the feasible, its rung is the top
    assert study.best_trial == under  # Optuna agrees: it reads the constraint


def test_the_pareto_front_is_the_feasible_nondominated_trials_at_the_top_rung() -> None:
    study = pareto_study()
    table = [  # (rung scores, FLOPs, limit)
        ([0.90, 0.99], 20_000, None),  # the most accurate
        ([0.90, 0.98], 5_000, None),  # cheaper, a little less accurate: on the front
        ([0.90, 0.97], 6_000, None),  # dominated by the one above
        ([0.90, 0.95], 1_000, None),  # the cheapest
        ([0.99], 100, None),  # stopped at rung 0: not at the top rung
        ([0.90, 0.999], 30_000, 25_000),  # over a limit: never on the front
    ]
    for scores, flops, limit in table:
        add_costed_trial(study, scores, rungs=2, flops=flops, limit=limit)
    front = pareto_front(study.trials, "flops")
    assert [t.number for t in front] == [3, 1, 0]  # cheapest first
    assert pareto_front(study.trials, "latency_ms") == []  # no trial has that cost stored


def test_the_dominance_stop_needs_two_trials_better_on_both_counts_at_the_same_rung() -> None:
    study = pareto_study()
    add_costed_trial(study, [0.95], rungs=3, flops=2000)
    me = add_costed_trial(study, [0.93], rungs=3, flops=3000, state=TrialState.RUNNING)
    # One dominating trial is not enough: a lucky score on a cheap rung stops nobody.
    assert [t.number for t in dominated_by(study.trials, number=1, rung=0, cost="flops")] == [0]
    add_costed_trial(study, [0.94], rungs=3, flops=4000)  # more accurate, dearer: no
    add_costed_trial(study, [0.92], rungs=3, flops=1000)  # cheaper, less accurate: no
    add_costed_trial(study, [0.93], rungs=3, flops=3000)  # equal on both: no
    add_costed_trial(study, [0.99], rungs=3, flops=10, limit=5)  # over a limit: never counts
    add_costed_trial(study, [0.80, 0.96], rungs=3, flops=2500)  # better at rung 1 only: no
    beaten = dominated_by(study.trials, number=me.number, rung=0, cost="flops")
    assert [t.number for t in beaten] == [0]
    add_costed_trial(study, [0.93], rungs=3, flops=2999)  # as accurate, cheaper: yes
    beaten = dominated_by(study.trials, number=me.number, rung=0, cost="flops")
    assert [t.number for t in beaten] == [0, 7]
    # Nothing has finished rung 1 but trial 6: the trial is not judged where it has no score.
    assert dominated_by(study.trials, number=me.number, rung=1, cost="flops") == []
