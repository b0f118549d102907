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

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuning.export.plan import ExportPlan, plan_export
from tuning.export.report import (
    evaluate_once,
    export_card,
    export_record,
    report_plots,
    write_config,
)
from tuning.export.retrain import EpochFn, retrain
from tuning.export.selection import stored_export
from tuning.memory import release_memory
from tuning.model.card import CARD_FILE, ExportCard
from tuning.publish import Publication
from tuning.records import ExportRecord, StudyKey, TrialKey
from tuning.study.config import StudySpec

LogFn = Callable[[str], None]


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, its card (the card on disk), the card's artifact id and the
    record the study keeps of it."""

    out_dir: Path
    card: ExportCard
    card_artifact: str
    record: ExportRecord


def export_study(
    spec: StudySpec,
    *,
    storage: str | None = None,
    data: str | Path | None = None,
    out: str | Path | None = None,
    trial: int | None = None,
    epoch_scale: float | None = None,
    baseline: bool = True,
    artifacts: str | Path | None = None,
    log: LogFn | None = None,
    on_epoch: EpochFn | None = None,
) -> ExportResult:
    """Retrain a trial of `spec`'s study on every training image by its own recipe, evaluate
    it once on the test set and publish `model.keras`, `saved_model/`, `model_card.json`, the
    report plots and `config.json` to `out`, also as artifacts of the trial.

    The trial is `trial`, else the best at the highest rung any trial reached. Its recipe runs
    for its epochs times `epoch_scale` (default: the study file's `[export] epoch_scale`).
    `out` defaults to `storage/models/<study>` (`<study>-trial<N>` for a chosen `trial`). With
    `baseline`, the card also gives the seed network's test errors under the same recipe, from
    a stored export or, if there is none, by exporting it first to `<out>-trial<N>`.

    Raises:
        ExportError: no such study or trial, or `out` cannot be written.
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
        compare=baseline,
        artifacts=artifacts,
    )
    reference = _baseline_export(plan, say=say, on_epoch=on_epoch)
    result = export_trial(plan, reference, say=say, on_epoch=on_epoch)
    say(f"wrote {plan.out_dir}{os.sep}")
    return result


def _baseline_export(
    plan: ExportPlan, *, say: LogFn, on_epoch: EpochFn | None
) -> ExportRecord | None:
    """The baseline's export record to set beside `plan`'s trial: stored, or made now."""
    if not plan.baseline_needed or plan.seed_trial is None:
        return None
    seed = plan.seed_trial
    stored = stored_export(
        plan.study,
        seed.number,
        epoch_scale=plan.settings.epoch_scale,
        data_sha256=plan.train.sha256,
    )
    if stored is not None:
        return stored
    label = seed.user_attrs.get(TrialKey.BASELINE)
    say(f"first, the baseline (trial #{seed.number}, {label}), same recipe:")
    return export_trial(plan.for_baseline(), None, say=say, on_epoch=on_epoch).record


def export_trial(
    plan: ExportPlan, reference: ExportRecord | None, *, say: LogFn, on_epoch: EpochFn | None
) -> ExportResult:
    """Train, test, report and publish `plan`'s trial, set beside the `reference` export, and
    record the export on the study."""
    try:
        with Publication(plan.out_dir, store=plan.store) as publication:
            folder = publication.staging
            trained = retrain(plan, folder, say=say, on_epoch=on_epoch)
            title = f"{plan.spec.name}, trial #{plan.trial.number}"
            tested, test_plots = None, list[Path]()
            if plan.test is None:
                say(f"{plan.train.source} has no test split: no test accuracy is reported")
            else:
                say(f"evaluating once on the {len(plan.test.y)} test images")
                tested, test_plots = evaluate_once(
                    trained.model, plan.test, folder, title=title, seed=plan.spec.seed
                )
            plots = [*report_plots(plan, trained, tested, folder), *test_plots]
            config = write_config(plan, folder)
            say("uploading artifacts")
            ids = publication.upload(plan.study, plan.trial, [trained.path, *plots, config])
            created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            record = export_record(plan, tested, created)
            if plan.is_baseline:
                reference = record  # the baseline is set beside itself
            card = export_card(
                plan, trained, tested, reference, plots=plots, artifacts=ids, created=created
            )
            card_id = publication.upload(plan.study, plan.trial, [card.write(folder)])[CARD_FILE]
            publication.commit()
    finally:
        release_memory()
    exports = dict(plan.study.user_attrs.get(StudyKey.EXPORTS) or {})
    exports[str(plan.trial.number)] = record.to_attr()
    plan.study.set_user_attr(StudyKey.EXPORTS, exports)
    plan.study.set_user_attr(StudyKey.EXPORT, {**record.to_attr(), "card_artifact": card_id})
    return ExportResult(plan.out_dir, card, card_id, record)
