"""The Optuna objective: a trial's network is built and its cost measured (`tuning.study.
trial_cost`); a network over an `[objective]` limit stops there, before any training. Otherwise
the trial climbs the fidelity rungs, scored on each by k-fold CV of the network and recipe its
hyperparameters describe. Rung r reports at step 3**r (`tuning.study.rungs`); between rungs the
study's pruner, or in a study of two directions the dominance stop, decides whether the trial
climbs on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import optuna

from tuning.artifacts import artifact_store
from tuning.errors import DataError, TrainingDivergedError
from tuning.hp import OptunaHyperParameters
from tuning.images.dataset import Images
from tuning.images.mnist import stratified_subset
from tuning.model.cost import model_cost
from tuning.protocol import Rung
from tuning.records import ModelCost, TrialKey
from tuning.study.config import DOMINANCE, StudySpec
from tuning.study.curves import attach_curves
from tuning.study.recipe_hypermodel import RecipeHyperModel
from tuning.study.rungs import DOMINATORS, RungRecord, dominated_by, rung_step
from tuning.study.trial_cost import apply_limits, infeasible_streak, known_cost, record_cost
from tuning.training.cv import CVResult, cross_validate

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class RungData:
    """A rung and the stratified training subset it is scored on."""

    rung: Rung
    x: np.ndarray
    y: np.ndarray


def rung_data(spec: StudySpec, images: Images) -> list[RungData]:
    """Each rung's stratified subset of `images` (a rung without a subset takes them all).

    Raises:
        DataError: a class has fewer images than a rung has folds.
    """
    out = []
    for rung in spec.for_images(len(images.y)).fidelity.ladder:
        size = rung.subset or len(images.y)
        x, y = stratified_subset(images.x, images.y, size=size, seed=spec.seed)
        counts = {name: int((y == i).sum()) for i, name in enumerate(images.class_names)}
        short = {name: n for name, n in counts.items() if n < rung.folds}
        if short:
            name, count = next(iter(short.items()))
            raise DataError(
                f"class '{name}' has {count} image(s) in a rung of {rung.folds}-fold CV; each "
                "class needs at least one image per fold (lower the rung's folds or add images)"
            )
        out.append(RungData(rung, x, y))
    return out


def make_objective(
    hypermodel: RecipeHyperModel,
    data: Sequence[RungData],
    *,
    spec: StudySpec,
    versions: dict[str, str],
    on_progress: ProgressFn | None = None,
    artifacts: str | Path | None = None,
) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    """The objective: the mean validation accuracy on the highest rung, after climbing the lower
    ones (with two directions: that and the network's cost). The network's cost is measured
    first and stored on the trial; one over a limit stops there (PRUNED, its reason in the
    `infeasible` user attribute), unless it is the baseline, scored anyway. Each finished rung is
    reported (with one direction), kept in the `rungs` user attribute, and its fold accuracies
    in `fold_accuracies`; the per-epoch curves of the last rung finished are attached as
    artifacts in `artifacts` (default `$TUNING_ARTIFACTS`, else storage/artifacts).

    Raises:
        ConfigError: a cost the `[objective]` limits or minimises is unknown for a network.
    """
    store = artifact_store(artifacts)
    last = len(data) - 1
    cost_name = spec.objective.stored.cost

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        hp = OptunaHyperParameters(trial)
        records: list[RungRecord] = []
        trial.set_user_attr(TrialKey.VERSIONS, versions)
        start = time.perf_counter()
        result: CVResult | None = None
        measured: list[ModelCost] = []

        def build() -> keras.Model:
            # The first fold's network, seeded and built, is measured before it trains: no
            # second build, and a network over a limit stops here, having trained nothing.
            model = hypermodel.build(hp)
            if not measured:
                measured.append(_measure(trial, model, spec, on_progress))
            return model

        try:
            for index, rung_data in enumerate(data):
                result = _score_rung(trial, build, hypermodel, hp, rung_data, index, spec,
                                     on_progress)  # fmt: skip
                records.append(_record(index, result, hypermodel, hp, rung_data.rung))
                trial.set_user_attr(TrialKey.RUNGS, [r.as_attr() for r in records])
                trial.set_user_attr(TrialKey.FOLD_ACCURACIES, result.fold_accuracies)
                trial.set_user_attr(TrialKey.CV_STD, result.std)
                trial.set_user_attr(
                    TrialKey.TRAIN_SECONDS, round(sum(r.train_seconds for r in records), 2)
                )
                if cost_name is None:
                    trial.report(result.mean, step=rung_step(index))
                # The baseline and the study file's starting points are scored on every rung
                # (the low rungs favour fast-fitting, unregularised networks, so a named
                # starting point is judged where it counts); their scores still enter the
                # pruner's ranking, because reporting records them for the rung.
                if index < last and not _climbs_every_rung(trial):
                    _stop_if_beaten(trial, index, spec, cost_name)
        except TrainingDivergedError as exc:
            trial.set_user_attr(TrialKey.FAIL_REASON, str(exc))
            raise
        finally:
            trial.set_user_attr(TrialKey.TRIAL_SECONDS, round(time.perf_counter() - start, 2))
            if result is not None and records:
                attach_curves(
                    trial,
                    result.histories,
                    store=store,
                    title=f"{trial.study.study_name}, trial #{trial.number}, rung "
                    f"{records[-1].rung}: CV accuracy {result.mean:.4f}",
                )
        if cost_name is None:
            return records[-1].mean
        return records[-1].mean, known_cost(measured[0], cost_name, trial=trial.number)

    return objective


def _measure(
    trial: optuna.Trial, model: keras.Model, spec: StudySpec, on_progress: ProgressFn | None
) -> ModelCost:
    """Measure and store the cost of the trial's untrained `model`, and apply the limits: a
    network over one stops here, before any training (the baseline excepted), and the run
    stops after `give_up_after` such trials in a row (`tuning.study.trial_cost`)."""
    cost = model_cost(model)
    record_cost(trial, cost)
    if spec.objective.stored.cost is not None:  # an unknown one fails before any training
        known_cost(cost, spec.objective.stored.cost, trial=trial.number)
    if on_progress:
        on_progress(f"trial {trial.number}: {cost.describe()}")
    broken = apply_limits(trial, cost, spec.objective.limits)
    if not broken:
        return cost
    reason = "over the limit: " + ", ".join(broken)
    if trial.user_attrs.get(TrialKey.BASELINE):
        trial.set_user_attr(TrialKey.INFEASIBLE, f"{reason} (scored anyway: the baseline)")
        return cost
    trial.set_user_attr(TrialKey.INFEASIBLE, reason)
    if on_progress:
        on_progress(f"trial {trial.number}: infeasible, {reason}")
    streak = infeasible_streak(trial.study.get_trials(deepcopy=False))
    if len(streak) + 1 >= spec.objective.give_up_after:
        trial.study.stop()  # the run then says why (`trial_cost.check_give_up`)
    raise optuna.TrialPruned(reason)


def _stop_if_beaten(trial: optuna.Trial, index: int, spec: StudySpec, cost: str | None) -> None:
    """Stop the trial after rung `index` if the study's pruner says so, or in a study of two
    directions if the dominance stop does (`tuning.study.rungs`)."""
    if cost is None:
        if trial.should_prune():
            raise optuna.TrialPruned(f"not promoted past rung {index}")
        return
    if spec.pruner != DOMINANCE:
        return
    trials = trial.study.get_trials(deepcopy=False)
    beaten = dominated_by(trials, number=trial.number, rung=index, cost=cost)
    if len(beaten) >= DOMINATORS:
        numbers = ", ".join(f"#{t.number}" for t in beaten[:DOMINATORS])
        raise optuna.TrialPruned(f"dominated at rung {index} by trials {numbers}")


def _score_rung(
    trial: optuna.Trial,
    build: Callable[[], keras.Model],
    hypermodel: RecipeHyperModel,
    hp: OptunaHyperParameters,
    rung_data: RungData,
    index: int,
    spec: StudySpec,
    on_progress: ProgressFn | None,
) -> CVResult:
    rung = rung_data.rung

    def on_fold(fold: int, accuracy: float) -> None:
        if on_progress:
            on_progress(
                f"trial {trial.number}: rung {index}, fold {fold + 1}/{rung.folds_run} "
                f"{accuracy:.4f}"
            )

    return cross_validate(
        build,
        rung_data.x,
        rung_data.y,
        folds=rung.folds,
        run_folds=rung.folds_run,
        seed=spec.seed,
        fit=lambda model, xs, ys, **kw: hypermodel.fit(
            hp, model, xs, ys, epoch_scale=rung.epoch_scale, **kw
        ),
        on_fold=on_fold,
    )


def _climbs_every_rung(trial: optuna.Trial) -> bool:
    return bool(
        trial.user_attrs.get(TrialKey.BASELINE) or trial.user_attrs.get(TrialKey.ENQUEUED_FROM)
    )


def _record(
    index: int,
    result: CVResult,
    hypermodel: RecipeHyperModel,
    hp: OptunaHyperParameters,
    rung: Rung,
) -> RungRecord:
    return RungRecord(
        rung=index,
        mean=result.mean,
        std=result.std,
        folds=list(result.fold_accuracies),
        epochs=hypermodel.recipe(hp).scaled(rung.epoch_scale).epochs,
        train_seconds=round(result.train_seconds, 2),
    )
