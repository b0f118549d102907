"""Which study and trial an export retrains (a trial named, or one chosen by a `PickRule` among
the feasible trials at the highest rung reached), whether the study still means what it meant,
and the record of each export kept on the study (so the baseline is trained once, not per
export)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuning.errors import ExportError
from tuning.images.dataset import Images
from tuning.protocol import Protocol
from tuning.reconnect import Reconnect
from tuning.records import ExportRecord, StudyKey, TrialKey, space_fingerprint
from tuning.storage import (
    missing_sqlite_file,
    open_storage,
    redact,
    resolve_storage_url,
    study_names,
)
from tuning.study.config import StudySpec
from tuning.study.create import stored_protocol
from tuning.study.hypermodels import make_hypermodel
from tuning.study.objective_config import PickRule
from tuning.study.recipe_hypermodel import RecipeHyperModel
from tuning.study.rungs import SCORED_STATES, highest_rung, ranked_at_highest_rung, rung_scores
from tuning.study.space import describe_space
from tuning.study.trial_cost import trial_costs

DEFAULT_MODELS = Path("storage/models")


def stored_export(
    study: optuna.Study, trial: int, *, epoch_scale: float, data_sha256: str
) -> ExportRecord | None:
    """The stored export of `trial` made with the same epoch scale and training data, if any."""
    value = (study.user_attrs.get(StudyKey.EXPORTS) or {}).get(str(trial))
    if not value:
        return None
    record = ExportRecord.from_attr(value)
    same = record.epoch_scale == epoch_scale and record.data_sha256 == data_sha256
    return record if same else None


def default_out_dir(study_name: str) -> Path:
    """`storage/models/<study>`."""
    return DEFAULT_MODELS / study_name


def load_exportable_study(
    spec: StudySpec,
    storage: str | None,
    *,
    trial: int | None = None,
    pick: PickRule | None = None,
    reconnect: Reconnect | None = None,
) -> tuple[optuna.Study, FrozenTrial]:
    """The stored study of `spec` and the trial to export: `trial` if given, else the one
    `pick` chooses (default: the best feasible trial at the highest rung any trial reached).

    Raises:
        ExportError: the database, the study or the trial does not exist, no trial (or not
            `trial`) has finished a rung, or none has the cost `pick` compares.
    """
    url = resolve_storage_url(storage)
    database = missing_sqlite_file(url)
    if database is not None:
        raise ExportError(
            f"no study database at {database}; run `tuning study {spec.path}` first "
            "or give the storage that holds the study",
            param="storage",
        )
    rdb = open_storage(url, reconnect=reconnect)
    if spec.name not in study_names(rdb):
        stored = ", ".join(study_names(rdb)) or "none"
        raise ExportError(
            f"study '{spec.name}' (from {spec.path}) not found in {redact(url)}; run `tuning "
            f"study {spec.path}` first. Stored studies: {stored}"
        )
    study = optuna.load_study(study_name=spec.name, storage=rdb)
    trials = study.get_trials(deepcopy=False)
    if trial is not None:
        if not 0 <= trial < len(trials):
            raise ExportError(
                f"study '{spec.name}' has trials 0..{len(trials) - 1}. Received: trial={trial}"
                if trials
                else f"study '{spec.name}' has no trials yet. Received: trial={trial}",
                param="trial",
            )
        chosen = trials[trial]
        if chosen.state not in SCORED_STATES or not rung_scores(chosen):
            raise ExportError(
                f"trial #{trial} of study '{spec.name}' is {chosen.state.name} without a "
                "finished rung; choose a COMPLETE or PRUNED trial",
                param="trial",
            )
        return study, chosen
    best = pick_trial(trials, pick or PickRule())
    if best is None:
        within = " within its [objective] limits" if spec.objective.limits else ""
        raise ExportError(
            f"study '{spec.name}' in {redact(url)} has no trial that finished a rung yet"
            f"{within}; run `tuning study {spec.path}` until one completes"
        )
    return study, best


def pick_trial(trials: Sequence[FrozenTrial], rule: PickRule) -> FrozenTrial | None:
    """The trial `rule` chooses among the feasible trials at the highest rung any of them
    reached (None: there are none): the most accurate, or the one of fewest `rule.cost` among
    those within `rule.within_points` percentage points of it (ties: the more accurate, then
    the earlier).

    Raises:
        ExportError: no trial near enough has `rule.cost` stored (it ran before costs were).
    """
    ranked = ranked_at_highest_rung(trials)
    if not ranked or rule.cost is None:
        return ranked[0] if ranked else None
    cost, top = rule.cost, highest_rung(ranked[0])
    best = rung_scores(ranked[0])[top]
    # A hair of slack, so that "within 0.1 points" keeps a trial exactly 0.1 points below.
    near = [t for t in ranked if rung_scores(t)[top] >= best - rule.within_points / 100 - 1e-9]
    costed = [t for t in near if cost in trial_costs(t)]
    if not costed:
        raise ExportError(
            f"no trial within {rule.within_points:g} points of the best has its {cost} stored "
            f"(trials run before costs were recorded); pick by 'best' or --trial. "
            f"Received: pick={rule.describe()!r}",
            param="pick",
        )
    return min(costed, key=lambda t: (trial_costs(t)[cost], -rung_scores(t)[top], t.number))


def check_compatible(
    study: optuna.Study, spec: StudySpec, train: Images
) -> tuple[Protocol, RecipeHyperModel]:
    """The study's stored protocol, once its trials are known to be rebuildable (same protocol
    version, training data and search-space code), and the HyperModel that rebuilds them, in
    the precision they were scored in.

    Raises:
        StudyMismatchError: the study predates this protocol, or the data file or the search
            space differ from the study's.
    """
    remedy = (
        f"export a study made by this tuning from this data (give {spec.path} a new [study] "
        "name and run it), or pass the study's own data file"
    )
    protocol = stored_protocol(study, remedy=remedy)
    hypermodel = make_hypermodel(
        spec,
        input_shape=train.input_shape,
        num_classes=train.num_classes,
        precision=protocol.precision,
        max_epochs=protocol.max_epochs,
    )
    here = dataclasses.replace(
        protocol,
        data_sha256=train.sha256,
        space_fingerprint=space_fingerprint(describe_space(hypermodel)),
    )
    here.check(
        protocol,
        study=f"study '{spec.name}'",
        remedy=remedy,
        only=("data_sha256", "space_fingerprint"),
    )
    return protocol, hypermodel


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The first seed-network trial that finished every rung it was given."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get(TrialKey.BASELINE):
            return trial
    return None


def trial_out_dir(study_name: str, trial: int, *, beside: Path | None = None) -> Path:
    """`storage/models/<study>-trial<N>`, or `<beside>-trial<N>` next to another export."""
    if beside is not None:
        return beside.with_name(f"{beside.name}-trial{trial}")
    return DEFAULT_MODELS / f"{study_name}-trial{trial}"
