"""What an export will cost, known before it trains anything: the networks it still has to train
(the baseline's own export first, when none is stored, then the trial's members, less those kept
from an earlier run), on how many images for how many epochs, and how long that takes here.

A network's time comes from its trial's own measured speed: the images per second at which its
highest finished rung trained (a fold's training images x the folds run x the epochs there, over
the seconds they took), when the trial ran on this device. A trial without that timing, or timed
on another device, is timed here on a few batches of its own recipe instead. A rung's seconds
also hold each epoch's pass over the held-out fold, which an export does not make, so a speed
from the trials errs on the slow side by that pass.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import optuna
from optuna.trial import FrozenTrial

from tuning.console import duration
from tuning.device import detect
from tuning.errors import TrainingDivergedError
from tuning.export.members import Member, pending_members
from tuning.export.plan import ExportPlan
from tuning.export.report import stored_baseline
from tuning.hp import OptunaHyperParameters
from tuning.memory import release_memory
from tuning.model.card import TrainingCost
from tuning.records import TrialKey
from tuning.study.rungs import rung_records

HOUR = 3600.0  # an export expected to take longer is given a cheaper choice
TIMED_IMAGES = 2048  # a timed epoch's images: a few seconds of the slowest recipe on 2 cores
TIMED_BATCHES = 16  # ... and never fewer batches than this
FROM_TRIALS = "trial timings"
FROM_BATCHES = "timed batches"


@dataclass(frozen=True)
class Speed:
    """How fast a trial's network trains here: images per second over its epochs (for a
    HyperModel's own fit, over one whole run of its own epochs), `measured_by` what."""

    images_per_second: float
    measured_by: str


@dataclass(frozen=True)
class NetworkCost:
    """A network the export will train: its trial and seed, whether it is one of the baseline's
    export, its epochs (None: the HyperModel's own fit chooses them) and its expected seconds at
    `speed` (None: unknown)."""

    trial: int
    seed: int
    baseline: bool
    epochs: int | None
    speed: Speed | None
    seconds: float | None


@dataclass(frozen=True)
class CheaperExport:
    """The same export with `seeds` members each, expected to take `seconds`."""

    seeds: int
    seconds: float


@dataclass(frozen=True)
class ExportEstimate:
    """An export's training, before it starts: `networks` in the order they train, on `images`
    images each, `kept` members reused from an earlier run, and, when the whole is expected to
    take over an hour, a `cheaper` export with one seed."""

    images: int
    networks: tuple[NetworkCost, ...]
    kept: int
    cheaper: CheaperExport | None = None

    @property
    def seconds(self) -> float | None:
        """The training's expected seconds (None: a network's are unknown)."""
        return _total(self.networks)

    def describe(self) -> str:
        """One line: what will be trained, at what speed, and about how long it takes here."""
        if not self.networks:
            return f"nothing to train: all {self.kept} members are kept from an earlier run"
        groups: dict[tuple[int, bool], list[NetworkCost]] = {}
        for network in self.networks:
            groups.setdefault((network.trial, network.baseline), []).append(network)
        parts = [_describe_group(nets) for nets in groups.values()]
        kept = f"; {self.kept} kept from an earlier run" if self.kept else ""
        total = self.seconds
        when = (
            f"about {duration(total, about=True)} here"
            if total is not None
            else "time unknown (a HyperModel's own fit its trials did not time)"
        )
        count = len(self.networks)
        return (
            f"{count} network{'s' if count > 1 else ''} to train on {self.images:,} images "
            f"({'; '.join(parts)}{kept}): {when}"
        )


def _describe_group(networks: list[NetworkCost]) -> str:
    """'3 of the baseline trial #0, 15 epochs at 3.6k img/s' (speed 'timed here' if so)."""
    first = networks[0]
    who = f"the baseline trial #{first.trial}" if first.baseline else f"trial #{first.trial}"
    if first.epochs is None:
        return f"{len(networks)} of {who}, its own epochs"
    speed = first.speed
    at = "" if speed is None else f" at {_rate(speed.images_per_second)} img/s"
    here = " timed here" if speed is not None and speed.measured_by == FROM_BATCHES else ""
    epochs = f"{first.epochs} epoch{'s' if first.epochs != 1 else ''}"
    return f"{len(networks)} of {who}, {epochs}{at}{here}"


def _rate(images_per_second: float) -> str:
    return (
        f"{images_per_second / 1000:.1f}k"
        if images_per_second >= 1000
        else f"{images_per_second:.0f}"
    )


def _total(networks: tuple[NetworkCost, ...] | list[NetworkCost]) -> float | None:
    total = 0.0
    for network in networks:
        if network.seconds is None:
            return None
        total += network.seconds
    return total


SpeedFn = Callable[[ExportPlan, FrozenTrial], Speed | None]


def estimate_export(
    plan: ExportPlan, *, say: Callable[[str], None] | None = None
) -> ExportEstimate:
    """What `plan`'s export will train and how long that takes here (see the module). A trial
    without a timing from this device is timed on a few batches first, which `say` announces."""
    speeds: dict[int, Speed | None] = {}

    def speed(each: ExportPlan, trial: FrozenTrial) -> Speed | None:
        if trial.number not in speeds:
            speeds[trial.number] = trial_speed(each, trial) or timed_speed(each, trial, say=say)
        return speeds[trial.number]

    estimate = _estimate(plan, speed)
    total = estimate.seconds
    if total is not None and total > HOUR and plan.settings.seeds > 1:
        fewer = _estimate(plan.with_seeds(1), speed).seconds
        if fewer is not None:
            estimate = dataclasses.replace(estimate, cheaper=CheaperExport(1, fewer))
    return estimate


def _estimate(plan: ExportPlan, speed: SpeedFn) -> ExportEstimate:
    plans = [plan.for_baseline(), plan] if baseline_to_train(plan) else [plan]
    networks, kept = [], 0
    for each in plans:
        pending, stored = pending_members(each)
        kept += stored
        for trial, seed in pending:
            networks.append(_network(each, trial, seed, speed(each, trial)))
    return ExportEstimate(len(plan.train.y), tuple(networks), kept)


def baseline_to_train(plan: ExportPlan) -> bool:
    """Whether the export must export the baseline first: none stored by the same rules."""
    return plan.baseline_needed and stored_baseline(plan) is None


def _network(plan: ExportPlan, trial: FrozenTrial, seed: int, speed: Speed | None) -> NetworkCost:
    epochs = None
    if not plan.hypermodel.own_fit:
        recipe = plan.hypermodel.recipe(_hp(trial)).scaled(plan.settings.epoch_scale)
        epochs = recipe.epochs
    seconds = None
    if speed is not None:
        seconds = len(plan.train.y) * (epochs or 1) / speed.images_per_second
    return NetworkCost(trial.number, seed, plan.is_baseline, epochs, speed, seconds)


def _hp(trial: FrozenTrial) -> OptunaHyperParameters:
    return OptunaHyperParameters(optuna.trial.FixedTrial(trial.params))  # type: ignore[arg-type]


def trial_speed(plan: ExportPlan, trial: FrozenTrial) -> Speed | None:
    """The speed at which `trial`'s highest timed rung trained, if it trained on this device."""
    ran_on = (trial.user_attrs.get(TrialKey.VERSIONS) or {}).get("device")
    if ran_on is not None and ran_on != detect().describe():
        return None
    try:
        timed = [r for r in rung_records(trial) if r.train_seconds > 0]
    except (ValueError, TypeError):  # a record of an earlier version: time it here
        return None
    if not timed or timed[-1].rung >= len(plan.protocol.rungs):
        return None
    record, count = timed[-1], len(plan.train.y)
    rung = plan.protocol.rungs[record.rung]
    subset = min(rung.subset or count, count)
    fold = subset * (rung.folds - 1) / rung.folds  # a fold's training images
    epochs = 1 if plan.hypermodel.own_fit else record.epochs
    return Speed(fold * rung.folds_run * epochs / record.train_seconds, FROM_TRIALS)


def timed_speed(
    plan: ExportPlan, trial: FrozenTrial, *, say: Callable[[str], None] | None = None
) -> Speed | None:
    """The speed of `trial`'s recipe here, from the second of two epochs on a few batches (the
    first pays for tracing). None for a HyperModel's own fit, whose epochs are its own."""
    if plan.hypermodel.own_fit:
        return None
    if say is not None:
        say(f"timing a few batches of trial #{trial.number}: no timing of it from this device")
    hp = _hp(trial)
    batch = plan.hypermodel.recipe(hp).batch_size
    count = min(len(plan.train.y), max(TIMED_IMAGES, TIMED_BATCHES * batch))
    ends: list[float] = []
    mark = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: ends.append(time.perf_counter()))
    keras.utils.set_random_seed(plan.spec.seed)
    model = plan.hypermodel.build(hp)
    x, y = plan.train.x[:count], plan.train.y[:count]
    try:
        plan.hypermodel.fit(hp, model, x, y, epochs=2, callbacks=[mark], seed=plan.spec.seed)
    except TrainingDivergedError:  # two epochs of a recipe that diverges: no speed, no harm
        return None
    finally:
        del model
        release_memory()
    return Speed(count / (ends[1] - ends[0]), FROM_BATCHES)


def training_cost(
    estimate: ExportEstimate | None, plan: ExportPlan, members: list[Member]
) -> TrainingCost | None:
    """The card's `cost`: the networks `plan`'s own export trained (not the baseline's, not the
    kept ones), their estimated seconds and the seconds they took; None when it trained none."""
    if estimate is None:
        return None
    mine = [n for n in estimate.networks if n.baseline == plan.is_baseline]
    trained = {(n.trial, n.seed) for n in mine}
    done = [m.record.seconds for m in members if (m.record.trial, m.record.seed) in trained]
    if not done:
        return None
    total = _total(mine)
    return TrainingCost(
        networks=len(done),
        estimated_seconds=None if total is None else round(total, 1),
        seconds=round(sum(done), 2),
        measured_by=_sources(mine),
    )


def _sources(networks: list[NetworkCost]) -> str:
    """What the networks' speeds were measured by, e.g. 'trial timings, timed batches'."""
    return ", ".join(sorted({n.speed.measured_by for n in networks if n.speed})) or "nothing"
