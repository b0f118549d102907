"""`tuning transfer`: tune, honestly score, train and publish a transfer of an exported MNIST
network to the classes of an image folder.

Protocol (also written into the card, the README and the study's dashboard note):
1. The transfer study (in the same storage as the MNIST study) tunes learning rate, epochs,
   augmentation strength and unfreeze depth; each trial is scored by stratified k-fold CV on
   all images. Its best trial is the configuration of the final model.
2. That best trial's CV score is optimistic (it was picked on those folds), so the reported
   accuracy comes from nested CV instead: each outer fold reruns the whole search (same trials,
   in memory) on the other images only, trains its winner on them and predicts the held-out
   ones. The pooled held-out predictions give the accuracy, a Wilson 95% interval over the
   images, the confusion matrix and the prediction grid.
3. The final model is trained on every image with the chosen configuration.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from tuning import figures
from tuning.artifacts import artifact_store
from tuning.device import detect
from tuning.images.folder import ImageFolder, load_image_folder, resolve_data_dir
from tuning.images.mnist import file_sha256
from tuning.memory import release_memory
from tuning.model.file import load_model_file
from tuning.notes import save_note
from tuning.publish import Publication
from tuning.records import StudyKey, TrialKey, library_versions
from tuning.storage import redact, resolve_storage_url
from tuning.training.cv import NestedResult
from tuning.transfer import model as transfer
from tuning.transfer.card import (
    DETAILS_FILE,
    NestedCV,
    NestedProtocol,
    TransferDetails,
    TransferTraining,
    TuningSummary,
    base_record,
    data_record,
)
from tuning.transfer.report import prediction_grid, transfer_note
from tuning.transfer.search import (
    LogFn,
    Search,
    check_search,
    check_sizes,
    nested_cv,
    protocol_summary,
    tune,
)
from tuning.transfer.study import OBJECTIVE, open_transfer_study, study_name_for, transfer_protocol
from tuning.typed_json import write_json

DEFAULT_MODELS = Path("storage/models")
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
GRID_FILE = "cv_predictions.png"
CONFUSION_FILE = "confusion_matrix.png"


@dataclass(frozen=True)
class TransferResult:
    """Where the transfer went, its full card, and the artifact ids of its files."""

    out_dir: Path
    card: TransferDetails
    artifacts: dict[str, str]


def run_transfer(
    model_path: str | Path,
    *,
    data: str | Path | None = None,
    classes: list[str] | None = None,
    out: str | Path | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    search: Search | None = None,
    seed: int = 42,
    members: str = "best",
    artifacts: str | Path | None = None,
    command: str = "",
    log: LogFn | None = None,
    on_data: Callable[[ImageFolder], None] | None = None,
) -> TransferResult:
    """Tune, score and train a transfer of the model at `model_path` to the image folder `data`
    (default `$TUNING_GREEK`), and publish it to `out` (default `storage/models/<study>`).

    `on_data` sees the loaded images first (say, to warn about skipped files); `command` is
    recorded as the way to reproduce the run. `search` defaults to `Search()`. From an ensemble
    export, `members` says what is frozen: its "best" member, or "all" members' features.

    Raises:
        ModelError: the base model is missing, does not match its card, or cannot be replaced.
        DataError: the folder, its classes or their images are unusable.
        StudyMismatchError: the transfer study exists with another protocol.
        ExportError: `out` cannot be written.
    """
    say = log or (lambda _message: None)
    started = time.perf_counter()
    search = search or Search()
    base = transfer.load_base(model_path, members=members)
    images = _load_images(data, classes, search, on_data)
    name = study_name or study_name_for(base, images)
    url = resolve_storage_url(storage)
    study, _ = open_transfer_study(url, name, transfer_protocol(base, images, search, seed))
    out_dir = Path(out) if out is not None else DEFAULT_MODELS / name
    store = artifact_store(artifacts)  # an unwritable artifact folder fails before tuning
    Publication.check_writable(out_dir)  # and so does an unwritable `out`
    card = TransferDetails(
        study=name,
        storage=redact(url),
        base=base_record(base),
        data=data_record(images),
        protocol=_nested_protocol(search, seed),
    )
    save_note(study, transfer_note(card, search.space, command))
    best, nested = _search(study, base, images, search=search, seed=seed, say=say)
    card = card.with_result(
        class_names=images.class_names,
        params=best.params,
        cv=NestedCV.of(nested, images),
        tuning=_tuning_summary(study, best),
    )
    config = {
        "command": command, "model": str(base.path), "data": str(images.root),
        "classes": images.class_names, "out": str(out_dir), "storage": card.storage,
        "study": name, **_search_config(search), "seed": seed,
    }  # fmt: skip
    with Publication(out_dir, store=store) as publication:
        card = _train_and_publish(
            publication, card, base, images, study, best, nested, config=config, seed=seed,
            say=say, started=started,
        )  # fmt: skip
    _remember(study, card, out_dir)
    save_note(study, transfer_note(card, search.space, command))
    say(f"wrote {out_dir}{os.sep}")
    return TransferResult(out_dir, card, publication.artifacts)


def _load_images(
    data: str | Path | None,
    classes: list[str] | None,
    search: Search,
    on_data: Callable[[ImageFolder], None] | None,
) -> ImageFolder:
    check_search(search)
    images = load_image_folder(resolve_data_dir(data), classes)
    if on_data is not None:
        on_data(images)
    check_sizes(images, search)
    return images


def _remember(study: optuna.Study, card: TransferDetails, out_dir: Path) -> None:
    """The result on the transfer study, for the dashboard (`StudyKey.TRANSFER`)."""
    if card.cv is not None:
        interval = [card.cv.interval.low, card.cv.interval.high]
        result = {"accuracy": card.cv.accuracy, "interval": interval, "out": str(out_dir)}
        study.set_user_attr(StudyKey.TRANSFER, result)


def _search(
    study: optuna.Study,
    base: transfer.BaseModel,
    images: ImageFolder,
    *,
    search: Search,
    seed: int,
    say: LogFn,
) -> tuple[optuna.trial.FrozenTrial, NestedResult]:
    """The transfer study's best trial (tuned on all images: the final configuration) and the
    nested CV that scores the whole search on images it never tuned on."""
    say(f"tuning on all {len(images.y)} images: study '{study.study_name}', {search.trials} trials")
    classes = len(images.class_names)
    best = tune(study, base, images.x, images.y, search=search, num_classes=classes, seed=seed)
    say(f"  best trial #{best.number}: {best.params}")
    say(
        f"nested CV: {search.outer_folds} outer folds, each tuning {search.trials} trials "
        "without its images"
    )
    return best, nested_cv(base, images, search=search, seed=seed, log=say)


def _train_and_publish(
    publication: Publication,
    card: TransferDetails,
    base: transfer.BaseModel,
    images: ImageFolder,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    nested: NestedResult,
    *,
    config: dict[str, object],
    seed: int,
    say: LogFn,
    started: float,
) -> TransferDetails:
    """Train the final model on every image by the best trial's configuration and publish it
    with its cards, plots and config; returns the complete card."""
    say(f"training the final model on all {len(images.y)} images")
    folder = publication.staging
    try:
        start = time.perf_counter()
        model = transfer.train(
            base, images.x, images.y, best.params, num_classes=len(images.class_names), seed=seed
        )
        model_path = folder / MODEL_FILE
        model.save(model_path)
        seconds = time.perf_counter() - start
        release_memory()
        load_model_file(model_path)  # the file the user gets loads safely
    finally:
        release_memory()
    plots = _plots(card, images, nested, folder)
    card = card.with_result(
        training=TransferTraining(
            images=len(images.y),
            seconds=round(seconds, 1),
            fine_tune_rate_factor=transfer.FINE_TUNE_RATE,
            batch_size=transfer.BATCH_SIZE,
            device=detect().describe(),
        ),
        sha256={"model": file_sha256(model_path)},
        versions=library_versions(),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 1),
    )
    files = [
        model_path,
        card.model_card().write(folder),
        write_json(folder / DETAILS_FILE, card),
        *plots,
        write_json(folder / CONFIG_FILE, config),
    ]
    say("uploading artifacts")
    publication.upload(study, best, files)
    publication.commit()
    return card


def _plots(
    card: TransferDetails, images: ImageFolder, nested: NestedResult, folder: Path
) -> list[Path]:
    """The held-out prediction grid and confusion matrix."""
    names, probs = images.class_names, nested.probs
    title = f"{card.study}: nested-CV accuracy {nested.correct(images.y)}/{len(images.y)}"
    return [
        prediction_grid(images.x, images.y, probs, names, folder / GRID_FILE, title=title),
        figures.confusion_matrix(
            images.y, probs.argmax(axis=1), names, folder / CONFUSION_FILE,
            title=f"{title} (held out)",
        ),
    ]  # fmt: skip


def _tuning_summary(study: optuna.Study, best: optuna.trial.FrozenTrial) -> TuningSummary:
    return TuningSummary(
        best_trial=best.number,
        best_cv_log_loss=float(best.value or 0.0),
        best_cv_accuracy=best.user_attrs.get(TrialKey.CV_ACCURACY),
        note="optimistic: the configuration was chosen on these same folds",
        trials=len(study.trials),
    )


def _search_config(search: Search) -> dict[str, object]:
    return {
        "trials": search.trials,
        "outer_folds": search.outer_folds,
        "inner_folds": search.inner_folds,
        "space": search.space,
    }


def _nested_protocol(search: Search, seed: int) -> NestedProtocol:
    return NestedProtocol(
        summary=protocol_summary(search, seed),
        kind="nested stratified k-fold CV",
        outer_folds=search.outer_folds,
        inner_folds=search.inner_folds,
        trials=search.trials,
        objective=OBJECTIVE,
        interval="Wilson score, 95%, n = images",
        seed=seed,
    )
