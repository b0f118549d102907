"""The test and report steps of an export: the one evaluation on the test split, the plots, the
resolved config saved beside the model, and the card that gathers them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuning import backend, figures
from tuning.device import detect
from tuning.errors import ModelError
from tuning.export.kept import kept_files_problem
from tuning.export.members import Member, MemberRecord, member_errors
from tuning.export.plan import ExportPlan
from tuning.export.retrain import MODEL_FILE
from tuning.export.selection import stored_export
from tuning.images.dataset import Images
from tuning.images.mnist import file_sha256
from tuning.model.card import (
    CARD_FILE,
    BaselineComparison,
    CVSummary,
    EnsembleSummary,
    ExportCard,
    MemberScore,
    ModelCard,
    TestScore,
    TrainingCost,
    TrainingRecord,
)
from tuning.model.compare import mean_difference, paired_comparison
from tuning.model.cost import FormatCheck
from tuning.model.predictions import PREDICTIONS_FILE, TestPredictions
from tuning.model.tradeoff import cost_section
from tuning.records import ExportRecord, ModelCost, TrialKey, library_versions
from tuning.study.curves import read_curves
from tuning.study.rungs import rung_scores
from tuning.typed_json import to_json, write_json

CONFIG_FILE = "config.json"
PREDICTIONS_SHA = "predictions"  # the card's sha256 of test_predictions.npz, beside "model"


def evaluate_once(
    model: Any,
    test: Images,
    test_sha256: str,
    members: list[Member],
    folder: Path,
    *,
    title: str,
    seed: int,
) -> tuple[TestScore, TestPredictions, list[Path]]:
    """The one evaluation on the test split, its predictions (with each member's, for an
    ensemble) saved as `test_predictions.npz`, and its confusion matrix and prediction grid."""
    probs = np.asarray(model.predict(test.x, batch_size=500, verbose=0), dtype=np.float64)
    labels = np.asarray(test.y, dtype=np.int64)
    stacked = [m.predictions.probabilities for m in members if m.predictions is not None]
    predictions = TestPredictions(
        labels,
        probs,
        test_sha256,
        np.stack(stacked) if len(members) > 1 and len(stacked) == len(members) else None,
    )
    predictions.save(folder)
    y_pred = predictions.predicted
    accuracy = float(np.mean(y_pred == labels))
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))
    score = TestScore(accuracy, loss, predictions.errors, len(labels))
    plots = [
        figures.confusion_matrix(
            test.y,
            y_pred,
            test.class_names,
            folder / "confusion_matrix.png",
            title=f"{title}: test set, accuracy {accuracy:.4f}",
        ),
        figures.prediction_grid(
            test.x, test.y, y_pred, test.class_names, folder / "test_predictions.png",
            title=title, seed=seed,
        ),
    ]  # fmt: skip
    return score, predictions, plots


def report_plots(
    plan: ExportPlan, first: MemberRecord, tested: TestScore | None, folder: Path
) -> list[Path]:
    """The learning curves (the trial's folds beside the `first` member's final training) and
    the fold accuracies of the trial and the baseline (with the test accuracy, if any)."""
    title = f"{plan.spec.name}, trial #{plan.trial.number}"
    groups = {
        f"trial #{plan.trial.number}": list(plan.trial.user_attrs.get(TrialKey.FOLD_ACCURACIES, []))
    }
    seed = plan.seed_trial
    if seed is not None and not plan.is_baseline and seed.user_attrs.get(TrialKey.FOLD_ACCURACIES):
        groups[f"seed network #{seed.number}"] = list(seed.user_attrs[TrialKey.FOLD_ACCURACIES])
    curves = read_curves(plan.study, plan.trial, store=plan.store)
    return [
        figures.learning_curves(curves, first.curves, folder / "learning_curves.png", title=title),
        figures.fold_accuracies(
            groups,
            folder / "fold_accuracies.png",
            test_accuracy=tested.accuracy if tested else None,
            title=title,
        ),
    ]


def write_config(plan: ExportPlan, folder: Path) -> Path:
    """`config.json`: the study file as resolved (defaults filled in) and the command's options."""
    study = {**plan.spec.to_dict(), "export": dataclasses.asdict(plan.settings)}
    return write_json(folder / CONFIG_FILE, {"study": study, "command": to_json(plan.command)})


@dataclass(frozen=True)
class Reference:
    """The baseline's export that this one is set beside: its record and test predictions."""

    record: ExportRecord
    predictions: TestPredictions | None


def stored_baseline(
    plan: ExportPlan, *, say: Callable[[str], None] | None = None
) -> Reference | None:
    """The baseline's stored export to set beside `plan`'s trial, if one was made by the same
    rules (epoch scale, data, number of seeds) and its test predictions are still there, whole:
    with the sha256 its card recorded and the errors the study recorded. `say` hears why one
    that is there is not used (it is exported again)."""
    if plan.seed_trial is None:
        return None
    stored = stored_export(
        plan.study,
        plan.seed_trial.number,
        epoch_scale=plan.settings.epoch_scale,
        data_sha256=plan.train.sha256,
    )
    if stored is None or stored.seeds != plan.settings.seeds or not Path(stored.out).is_dir():
        return None  # none made by these rules, or moved: make it again
    folder = Path(stored.out)
    try:
        card = ModelCard.read(folder / MODEL_FILE)
        sha = card.sha256.get(PREDICTIONS_SHA) if card else None
        recorded = {} if sha is None else {PREDICTIONS_FILE: sha}
        problem = kept_files_problem(
            folder, [PREDICTIONS_FILE], recorded, record=folder / CARD_FILE
        )
        if card is None:
            problem = f"{folder / CARD_FILE} is missing"
        elif problem is None:
            predictions = TestPredictions.load(folder)
            if predictions.errors == stored.test_errors:
                return Reference(stored, predictions)
            problem = (
                f"{folder / PREDICTIONS_FILE} makes {predictions.errors} test errors where the "
                f"study records {stored.test_errors}"
            )
    except ModelError as exc:
        problem = str(exc)
    if say is not None:
        say(f"the baseline's export (trial #{stored.trial}): {problem}; exporting it again")
    return None


def compare_with_baseline(
    plan: ExportPlan,
    reference: Reference | None,
    predictions: TestPredictions | None,
    members: list[Member],
) -> BaselineComparison | None:
    """The card's `baseline` section: the baseline's test errors beside this model's, this model
    against the baseline's first network on the same images, and seeds against seeds."""
    if reference is None or predictions is None or reference.record.test_errors is None:
        return None
    record, baseline = reference.record, reference.predictions
    baseline_errors = reference.record.test_errors
    paired = None
    if baseline is not None and baseline.same_images(predictions):
        paired = paired_comparison(predictions, baseline.member(0), seed=plan.spec.seed)
    errors = member_errors(members)
    seeds = None
    if record.member_errors and len(record.member_errors) > 1 and len(errors) > 1:
        seeds = mean_difference(errors, record.member_errors)
    return BaselineComparison(
        **{f.name: getattr(record, f.name) for f in dataclasses.fields(record)},  # typed, as is
        errors_saved=baseline_errors - predictions.errors,
        paired=paired,
        seeds_compared=seeds,
    )


def export_record(
    plan: ExportPlan,
    tested: TestScore | None,
    members: list[Member],
    versus: BaselineComparison | None,
    created: str,
    *,
    cost: ModelCost | None = None,
    format_checks: Sequence[FormatCheck] = (),
) -> ExportRecord:
    """What the study keeps of this export (`StudyKey.EXPORTS`), with what its model costs to
    run (`shipped_cost`) and each file's check (`format_checks`), which later exports set beside
    theirs without loading it."""
    errors = member_errors(members)
    return ExportRecord(
        trial=plan.trial.number,
        test_accuracy=tested.accuracy if tested else None,
        test_errors=tested.errors if tested else None,
        test_images=tested.images if tested else 0,
        epoch_scale=plan.settings.epoch_scale,
        data_sha256=plan.train.sha256,
        out=str(plan.out_dir),
        created=created,
        seeds=len(members),
        member_errors=errors if len(errors) == len(members) else None,
        versus=versus.paired.sentence() if versus and versus.paired else None,
        tuning_gain=versus.seeds_compared.sentence() if versus and versus.seeds_compared else None,
        cost=cost,
        formats=list(format_checks) or None,
    )


def ensemble_summary(members: list[Member], predictions: TestPredictions | None) -> EnsembleSummary:
    """The members' test errors, their mean and spread, and the errors of the mean of the first
    k members for every k."""
    known = member_errors(members)
    curve = []
    if predictions is not None:
        stacked = np.stack([m.predictions.probabilities for m in members if m.predictions])
        means = np.cumsum(stacked, axis=0) / np.arange(1, len(stacked) + 1)[:, None, None]
        curve = [int(np.sum(mean.argmax(axis=1) != predictions.labels)) for mean in means]
    return EnsembleSummary(
        members="seeds" if len({m.record.trial for m in members}) == 1 else "top",
        scores=[
            MemberScore(m.record.trial, m.record.seed, m.record.test_errors, m.record.seconds)
            for m in members
        ],
        mean_errors=float(np.mean(known)) if known else None,
        std_errors=float(np.std(known, ddof=1)) if len(known) > 1 else None,
        curve=curve,
    )


def export_card(
    plan: ExportPlan,
    members: list[Member],
    shipped: Path,
    tested: TestScore | None,
    predictions: TestPredictions | None,
    versus: BaselineComparison | None,
    *,
    files: list[str],
    formats: list[str],
    artifacts: dict[str, str],
    created: str,
    cost: TrainingCost | None = None,
    format_checks: Sequence[FormatCheck] = (),
    model_cost: ModelCost | None = None,
) -> ExportCard:
    """The export's card: the trial, its CV and test scores, the baseline beside it, its
    members, how the model (the `shipped` file) was trained, what that was expected to cost
    and cost, what the model (`model_cost`, from `shipped_cost`) costs to run in each format
    written (`format_checks`) beside the baseline, and what was published."""
    trial, train, first = plan.trial, plan.train, members[0].record
    attrs = trial.user_attrs
    # The baseline's own card sets nothing beside it.
    beside = versus if versus is not None and versus.trial != trial.number else None
    sha256 = {"model": file_sha256(shipped), "data": train.sha256}
    if predictions is not None:  # what a later export reads back, with this one as its baseline
        sha256[PREDICTIONS_SHA] = file_sha256(shipped.with_name(PREDICTIONS_FILE))
    return ExportCard(
        study=plan.spec.name,
        trial=trial.number,
        params=dict(trial.params),
        class_names=train.class_names,
        cv=CVSummary(
            rung=plan.top_rung,
            mean=plan.cv_score,
            std=attrs.get(TrialKey.CV_STD),
            folds=attrs.get(TrialKey.FOLD_ACCURACIES),
            rung_scores={str(rung): score for rung, score in rung_scores(trial).items()},
            protocol=plan.protocol,
            train_seconds=attrs.get(TrialKey.TRAIN_SECONDS),
        ),
        sha256=sha256,
        backend=backend.name(),
        formats=formats,
        study_file=str(plan.spec.path),
        storage=plan.command.storage,
        seed_network=bool(attrs.get(TrialKey.BASELINE)),
        test=tested,
        # The baseline's cost goes in the cost section, beside this model's.
        baseline=dataclasses.replace(versus, cost=None, formats=None) if versus else None,
        ensemble=ensemble_summary(members, predictions),
        training=TrainingRecord(
            images=len(train.y),
            recipe=first.recipe,
            epoch_scale=plan.settings.epoch_scale,
            seed=plan.spec.seed,
            final_loss=first.curves["loss"][-1],
            final_accuracy=first.curves["accuracy"][-1],
            seconds=round(sum(m.record.seconds for m in members), 2),
            device=detect().describe(),
        ),
        cost=cost_section(
            training=cost,
            model=model_cost,
            checks=format_checks,
            baseline=beside.cost if beside else None,
            baseline_checks=(beside.formats or []) if beside else [],
            paired=beside.paired if beside else None,
            margin=plan.settings.margin,
        ),
        param_count=sum(m.record.param_count for m in members),
        data=train.source,
        files=sorted(files),
        artifacts=artifacts,
        input=train.input_convention(),
        versions=library_versions(),
        created=created,
    )
