"""The test and report steps of an export: the one evaluation on the test split, the plots, the
resolved config saved beside the model, and the card that gathers them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from tuning import figures
from tuning.device import detect
from tuning.export.plan import ExportPlan
from tuning.export.retrain import MODEL_FILE, SAVED_MODEL_DIR, Retrained
from tuning.images.dataset import Images
from tuning.images.mnist import file_sha256
from tuning.model.card import (
    CARD_FILE,
    BaselineComparison,
    CVSummary,
    ExportCard,
    TestScore,
    TrainingRecord,
)
from tuning.records import ExportRecord, TrialKey, library_versions
from tuning.study.curves import read_curves
from tuning.study.rungs import rung_scores
from tuning.typed_json import to_json, write_json

CONFIG_FILE = "config.json"


def evaluate_once(
    model: Any, test: Images, folder: Path, *, title: str, seed: int
) -> tuple[TestScore, list[Path]]:
    """The one evaluation on the test split, and its confusion matrix and prediction grid."""
    probs = np.asarray(model.predict(test.x, batch_size=500, verbose=0), dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    accuracy = float(np.mean(y_pred == test.y))
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(test.y)), test.y], 1e-12, 1.0))))
    score = TestScore(accuracy, loss, int(np.sum(y_pred != test.y)), len(test.y))
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
    return score, plots


def report_plots(
    plan: ExportPlan, trained: Retrained, tested: TestScore | None, folder: Path
) -> list[Path]:
    """The learning curves (the trial's folds beside the final training) and the fold
    accuracies of the trial and the baseline (with the test accuracy, if any)."""
    title = f"{plan.spec.name}, trial #{plan.trial.number}"
    groups = {
        f"trial #{plan.trial.number}": list(plan.trial.user_attrs.get(TrialKey.FOLD_ACCURACIES, []))
    }
    seed = plan.seed_trial
    if seed is not None and not plan.is_baseline and seed.user_attrs.get(TrialKey.FOLD_ACCURACIES):
        groups[f"seed network #{seed.number}"] = list(seed.user_attrs[TrialKey.FOLD_ACCURACIES])
    curves = read_curves(plan.study, plan.trial, store=plan.store)
    return [
        figures.learning_curves(
            curves, trained.curves, folder / "learning_curves.png", title=title
        ),
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


def export_record(plan: ExportPlan, tested: TestScore | None, created: str) -> ExportRecord:
    """What the study keeps of this export (`StudyKey.EXPORTS`)."""
    return ExportRecord(
        trial=plan.trial.number,
        test_accuracy=tested.accuracy if tested else None,
        test_errors=tested.errors if tested else None,
        test_images=tested.images if tested else 0,
        epoch_scale=plan.settings.epoch_scale,
        data_sha256=plan.train.sha256,
        out=str(plan.out_dir),
        created=created,
    )


def export_card(
    plan: ExportPlan,
    trained: Retrained,
    tested: TestScore | None,
    reference: ExportRecord | None,
    *,
    plots: list[Path],
    artifacts: dict[str, str],
    created: str,
) -> ExportCard:
    """The export's card: the trial, its CV and test scores, the baseline beside it (its stored
    `reference` export), how the model was trained, and the files and artifacts published."""
    trial, train = plan.trial, plan.train
    attrs = trial.user_attrs
    files = [MODEL_FILE, SAVED_MODEL_DIR, CARD_FILE, CONFIG_FILE, *(p.name for p in plots)]
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
        sha256={"model": file_sha256(trained.path), "data": train.sha256},
        study_file=str(plan.spec.path),
        storage=plan.command.storage,
        seed_network=bool(attrs.get(TrialKey.BASELINE)),
        test=tested,
        baseline=_versus(reference, tested),
        training=TrainingRecord(
            images=len(train.y),
            recipe=trained.recipe,
            epoch_scale=plan.settings.epoch_scale,
            seed=plan.spec.seed,
            final_loss=trained.curves["loss"][-1],
            final_accuracy=trained.curves["accuracy"][-1],
            seconds=round(trained.seconds, 2),
            device=detect().describe(),
        ),
        param_count=int(trained.model.count_params()),
        data=train.source,
        files=sorted(files),
        artifacts=artifacts,
        input=train.input_convention(),
        versions=library_versions(),
        created=created,
    )


def _versus(reference: ExportRecord | None, tested: TestScore | None) -> BaselineComparison | None:
    """The card's `baseline` section: the baseline's test errors beside this model's."""
    if reference is None or tested is None or reference.test_errors is None:
        return None
    return BaselineComparison(
        **dataclasses.asdict(reference), errors_saved=reference.test_errors - tested.errors
    )
