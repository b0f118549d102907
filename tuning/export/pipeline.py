"""`tuning export`: retrain a study's best trial (at the highest rung any trial reached) on all
training images by its own recipe, test it once, and publish the model, its card, its report and
the resolved config as one folder and as Optuna artifacts. The card sets the winner beside the
seed-network baseline trained by the same recipe (exported first when none is stored).

The steps, one module each: plan (`plan`: which trial, which data, which protocol, every input
checked), the baseline's own export if it is needed, then train (`retrain`), test once and
report (`report`), and publish (`tuning.publish.Publication`). The test split is read by the
plan and used once; data without one is exported without a test accuracy, never with an
invented one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuning.export.estimate import ExportEstimate, estimate_export, training_cost
from tuning.export.members import Member, load_members, members_dir, train_members
from tuning.export.plan import ExportPlan, plan_export
from tuning.export.report import (
    Reference,
    compare_with_baseline,
    evaluate_once,
    export_card,
    export_record,
    report_plots,
    stored_baseline,
    write_config,
)
from tuning.export.retrain import MODEL_FILE, EpochFn
from tuning.memory import release_memory
from tuning.model.card import CARD_FILE, ExportCard
from tuning.model.cost import FormatCheck
from tuning.model.ensemble import build_ensemble
from tuning.model.file import load_model_file
from tuning.model.formats import FILES, check_files, float32_twin, write_formats
from tuning.model.predictions import PREDICTIONS_FILE, TestPredictions
from tuning.model.tradeoff import shipped_cost
from tuning.publish import Publication, disk_errors
from tuning.reconnect import Reconnect
from tuning.records import ExportRecord, StudyKey, TrialKey
from tuning.study.config import StudySpec
from tuning.study.note import write_study_note

LogFn = Callable[[str], None]
EstimateFn = Callable[[ExportEstimate], None]
PARITY_IMAGES = 1000  # the training images other formats are checked on without a test split


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, its card (the card on disk), the card's artifact id, the record
    the study keeps of it and its test predictions (None: the data has no test split); what it
    was estimated to train before it started, and the seconds it took from then."""

    out_dir: Path
    card: ExportCard
    card_artifact: str
    record: ExportRecord
    predictions: TestPredictions | None = None
    estimate: ExportEstimate | None = None
    seconds: float | None = None


def export_study(
    spec: StudySpec,
    *,
    storage: str | None = None,
    data: str | Path | None = None,
    out: str | Path | None = None,
    trial: int | None = None,
    epoch_scale: float | None = None,
    seeds: int | None = None,
    members: str | None = None,
    formats: Sequence[str] | None = None,
    pick: str | None = None,
    baseline: bool = True,
    artifacts: str | Path | None = None,
    log: LogFn | None = None,
    on_epoch: EpochFn | None = None,
    on_estimate: EstimateFn | None = None,
) -> ExportResult:
    """Retrain a trial of `spec`'s study on every training image by its own recipe, evaluate
    it once on the test set and publish `model.keras`, `model_card.json`, the report plots and
    `config.json` to `out`, also as artifacts of the trial, and the model in each of `formats`
    (default: `[export] formats`; `tuning.model.formats`), each checked against the Keras model
    on the test images when written.

    The trial is `trial`, else the one the rule `pick` chooses (default: `[export] pick`, by
    default the best feasible trial at the highest rung any reached). Its recipe runs
    for its epochs times `epoch_scale` (default: the study file's `[export] epoch_scale`).
    `out` defaults to `storage/models/<study>` (`<study>-trial<N>` for a chosen `trial`).

    It trains `seeds` networks (default: `[export] seeds`): seeds of the trial, or with
    `members="top"` the best distinct trials at the top rung; more than one ship as an ensemble
    that averages their outputs. Trained members are kept beside `out` and reused on a rerun.
    With `baseline`, the card also sets the model beside the seed network trained by the same
    rules and seeds (paired on the same test images, and seeds against seeds), from a stored
    export or, if there is none, by exporting it first to `<out>-trial<N>`.

    Before training, `on_estimate` gets the networks to train and their expected time here
    (`tuning.export.estimate`); the result holds it beside the seconds the export took.

    Raises:
        ExportError: no such study or trial, a format that cannot be written here, or `out`
            cannot be written.
        ParityError: a file written in another format does not compute what Keras does.
        StudyMismatchError: the data or the search space changed since the study ran.
        DataError: the training data is missing or malformed.
    """
    say = log or (lambda _message: None)
    plan = plan_export(
        spec,
        storage=storage,
        data=data,
        out=out,
        trial=trial,
        epoch_scale=epoch_scale,
        seeds=seeds,
        members=members,
        formats=formats,
        pick=pick,
        compare=baseline,
        artifacts=artifacts,
        reconnect=Reconnect(seconds=spec.storage.retry_minutes * 60, say=say),
    )
    estimate = estimate_export(plan, say=say)
    if on_estimate is not None:
        on_estimate(estimate)
    start = time.perf_counter()
    reference = _baseline_export(plan, estimate, say=say, on_epoch=on_epoch)
    result = export_trial(plan, reference, say=say, on_epoch=on_epoch, estimate=estimate)
    say(f"wrote {plan.out_dir}{os.sep}")
    seconds = round(time.perf_counter() - start, 2)
    return dataclasses.replace(result, estimate=estimate, seconds=seconds)


def _baseline_export(
    plan: ExportPlan, estimate: ExportEstimate, *, say: LogFn, on_epoch: EpochFn | None
) -> Reference | None:
    """The baseline's export to set beside `plan`'s trial: stored (with the same number of seeds
    and its test predictions), or made now."""
    if not plan.baseline_needed or plan.seed_trial is None:
        return None
    stored = stored_baseline(plan, say=say)
    if stored is not None:
        return stored
    seed = plan.seed_trial
    label = seed.user_attrs.get(TrialKey.BASELINE)
    seeds = plan.settings.seeds
    say(
        f"first, the baseline (trial #{seed.number}, {label}), same recipe"
        f"{f', {seeds} seeds' if seeds > 1 else ''}:"
    )
    result = export_trial(plan.for_baseline(), None, say=say, on_epoch=on_epoch, estimate=estimate)
    return Reference(result.record, result.predictions)


def export_trial(
    plan: ExportPlan,
    reference: Reference | None,
    *,
    say: LogFn,
    on_epoch: EpochFn | None,
    estimate: ExportEstimate | None = None,
) -> ExportResult:
    """Train (or take from their folder) the members, then ship, test, report and publish
    `plan`'s trial, set beside the `reference` export, and record the export on the study;
    its card sets the members' training beside what `estimate` expected of it."""
    with disk_errors(members_dir(plan.out_dir, plan.spec.name), unchanged=plan.out_dir):
        members = train_members(plan, say=say, on_epoch=on_epoch)
    try:
        with Publication(plan.out_dir, store=plan.store) as publication:
            folder = publication.staging
            model, shipped = ship(members, folder, say=say)
            title = f"{plan.spec.name}, trial #{plan.trial.number}"
            tested, predictions, test_plots = None, None, list[Path]()
            test, test_sha256 = plan.test, plan.test_sha256
            if test is None or test_sha256 is None:
                say(f"{plan.train.source} has no test split: no test accuracy is reported")
            else:
                say(f"evaluating once on the {len(test.y)} test images")
                tested, predictions, test_plots = evaluate_once(
                    model, test, test_sha256, members, folder, title=title, seed=plan.spec.seed
                )
            checks = write_and_check(plan, model, folder, say=say)
            model_cost = shipped_cost(model, checks)
            del model
            plots = [*report_plots(plan, members[0].record, tested, folder), *test_plots]
            config = write_config(plan, folder)
            kept = [shipped, *plots, config]
            if predictions is not None:
                kept.append(folder / PREDICTIONS_FILE)
            say("uploading artifacts")
            ids = publication.upload(plan.study, plan.trial, kept)
            created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            versus = compare_with_baseline(plan, reference, predictions, members)
            record = export_record(
                plan, tested, members, versus, created, cost=model_cost, format_checks=checks
            )
            if plan.is_baseline:  # set beside itself: no predictions, no seeds to compare
                versus = compare_with_baseline(plan, Reference(record, None), predictions, [])
            formats = list(plan.settings.formats)
            files = [p.name for p in kept] + [FILES[f] for f in formats[1:]] + [CARD_FILE]
            card = export_card(
                plan, members, shipped, tested, predictions, versus,
                files=files, formats=formats, artifacts=ids, created=created,
                cost=training_cost(estimate, plan, members), format_checks=checks,
                model_cost=model_cost,
            )  # fmt: skip
            card_id = publication.upload(plan.study, plan.trial, [card.write(folder)])[CARD_FILE]
            publication.commit()
    finally:
        release_memory()
    exports = dict(plan.study.user_attrs.get(StudyKey.EXPORTS) or {})
    exports[str(plan.trial.number)] = record.to_attr()
    plan.study.set_user_attr(StudyKey.EXPORTS, exports)
    plan.study.set_user_attr(StudyKey.EXPORT, {**record.to_attr(), "card_artifact": card_id})
    write_study_note(plan.study)
    return ExportResult(plan.out_dir, card, card_id, record, predictions)


def ship(members: list[Member], folder: Path, *, say: LogFn) -> tuple[Any, Path]:
    """The model the user gets, in `folder`: the one member's file, or an ensemble averaging
    all members' outputs; loaded back from its file. Returns the model and its file."""
    path = folder / MODEL_FILE
    if len(members) == 1:
        # Loaded from the kept file, not its copy in the staging folder: a failure names the
        # file the user has, not a temporary path gone once the export fails.
        model = load_model_file(members[0].path)
        shutil.copyfile(members[0].path, path)
    else:
        say(f"averaging the {len(members)} members' outputs into one model")
        build_ensemble(load_members(members)).save(path)
        release_memory()
        model = load_model_file(path)
    return model, path


def write_and_check(plan: ExportPlan, model: Any, folder: Path, *, say: LogFn) -> list[FormatCheck]:
    """`model` (in `folder` as model.keras) written in the plan's other formats, each file set
    beside it on the test images (or, without a test split, on some training images): parity,
    errors and latency, for the card."""
    formats = plan.settings.formats
    # One float32 twin (a rebuilt network: seconds for an ensemble) serves writing and checks.
    twin = float32_twin(model)
    if len(formats) > 1:
        say(f"writing {', '.join(formats[1:])}; checking each against the Keras model")
        if twin is not model:
            say("model.keras computes in a mixed precision; the other files, in float32")
    write_formats(model, folder, formats, twin=twin)
    if plan.test is not None:
        images, labels = plan.test.x, plan.test.y
    else:
        images, labels = plan.train.x[:PARITY_IMAGES], None
    return check_files(model, folder, formats, images, labels, twin=twin)
