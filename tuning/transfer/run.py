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
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from sklearn import metrics

from tuning import figures
from tuning.artifacts import artifact_store, attach_files
from tuning.device import detect
from tuning.images.folder import ImageFolder, load_image_folder, resolve_data_dir
from tuning.images.mnist import file_sha256
from tuning.memory import release_memory
from tuning.model.file import load_model_file
from tuning.notes import save_note
from tuning.publish import publish, staging_dir, write_json
from tuning.records import (
    StudyKey,
    TrialKey,
    check_protocol,
    library_versions,
    space_fingerprint,
)
from tuning.storage import open_storage, redact, resolve_storage_url
from tuning.training.cv import wilson_interval
from tuning.transfer import model as transfer
from tuning.transfer.report import (
    model_card,
    prediction_grid,
    transfer_note,
)
from tuning.transfer.search import (
    LogFn,
    Search,
    check_search,
    check_sizes,
    nested_cv,
    protocol_summary,
    tune,
)

DEFAULT_MODELS = Path("storage/models")
MODEL_FILE = "model.keras"
TRANSFER_CARD = "transfer_card.json"
CONFIG_FILE = "config.json"
GRID_FILE = "cv_predictions.png"
CONFUSION_FILE = "confusion_matrix.png"
# Generic split names say nothing about a dataset; its parent folder ("greek") does.
_SPLIT_NAMES = {"train", "training", "data", "images"}

# What the dashboard's charts call the objective (instead of "Objective 0").
METRIC_NAME = "CV log loss"


@dataclass(frozen=True)
class TransferResult:
    """Where the transfer went and what its card says."""

    out_dir: Path
    card: dict[str, Any]


def study_name_for(base: transfer.BaseModel, data: ImageFolder) -> str:
    """`<base study>-<dataset>-<classes>`, e.g. `mnist_cnn-greek-alpha-beta-gamma`."""
    root = data.root.resolve()
    dataset = root.parent.name if root.name.lower() in _SPLIT_NAMES else root.name
    return f"{base.study or base.path.parent.name}-{dataset}-{'-'.join(data.class_names)}"


def open_transfer_study(url: str, name: str, protocol: dict[str, Any]) -> tuple[optuna.Study, bool]:
    """Create the study, or resume it if it was made with the same protocol.

    Raises:
        StudyMismatchError: a study of that name exists with another base model, data or space.
    """
    storage = open_storage(url)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize")
        study.set_user_attr(StudyKey.PROTOCOL, protocol)
        study.set_metric_names([METRIC_NAME])
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name)
    if study.metric_names is None:  # stored before the objective was named
        study.set_metric_names([METRIC_NAME])
    stored = study.user_attrs.get(StudyKey.PROTOCOL)
    if stored is None and not study.trials:
        # A run stopped between creating the study and recording its protocol.
        study.set_user_attr(StudyKey.PROTOCOL, protocol)
        return study, True
    check_protocol(
        stored,
        protocol,
        study=f"transfer study '{name}' in {redact(url)}",
        remedy="give the transfer study a new name (or use another storage) to start afresh",
    )
    return study, False


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
    artifacts: str | Path | None = None,
    command: str = "",
    log: LogFn | None = None,
    on_data: Callable[[ImageFolder], None] | None = None,
) -> TransferResult:
    """Tune, score and train a transfer of the model at `model_path` to the image folder `data`
    (default `$TUNING_GREEK`), and publish it to `out` (default `storage/models/<study>`).

    `on_data` sees the loaded images first (say, to warn about skipped files); `command` is
    recorded as the way to reproduce the run. `search` defaults to `Search()`.

    Raises:
        ModelError: the base model is missing, does not match its card, or cannot be replaced.
        DataError: the folder, its classes or their images are unusable.
        StudyMismatchError: the transfer study exists with another protocol.
    """
    say = log or (lambda _message: None)
    started = time.perf_counter()
    search = search or Search()
    check_search(search)
    base = transfer.load_base(model_path)
    images = load_image_folder(resolve_data_dir(data), classes)
    if on_data is not None:
        on_data(images)
    check_sizes(images, search)
    names = images.class_names
    name = study_name or study_name_for(base, images)
    url = resolve_storage_url(storage)
    protocol = {
        "classes": names,
        "base_model_sha256": base.sha256,
        "data_sha256": images.sha256,
        "space_fingerprint": space_fingerprint(search.space),
        "inner_folds": search.inner_folds,
        "seed": seed,
        "objective": "held-out log loss (minimize)",
    }
    study, _ = open_transfer_study(url, name, protocol)
    out_dir = Path(out) if out is not None else DEFAULT_MODELS / name
    card: dict[str, Any] = {
        "card_version": 1,
        "study": name,
        "storage": redact(url),
        "base": {
            "path": str(base.path),
            "sha256": base.sha256,
            "study": base.study,
            "trial": base.trial,
            "test_accuracy": (base.card.sections.get("test") or {}).get("accuracy"),
        },
        "data": {
            "root": str(images.root),
            "classes": names,
            "counts": images.counts(),
            "sha256": images.sha256,
            "skipped": [str(s) for s in images.skipped],
        },
        "protocol": {
            "summary": protocol_summary(search, seed),
            "kind": "nested stratified k-fold CV",
            "outer_folds": search.outer_folds,
            "inner_folds": search.inner_folds,
            "trials": search.trials,
            "objective": protocol["objective"],
            "interval": "Wilson score, 95%, n = images",
            "seed": seed,
        },
    }
    save_note(study, transfer_note(card, search.space, command))
    say(
        f"tuning on all {len(images.y)} images: study '{name}' in {redact(url)}, "
        f"{search.trials} trials"
    )
    best = tune(study, base, images.x, images.y, search=search, num_classes=len(names), seed=seed)
    say(f"  best trial #{best.number}: {best.params}")
    say(
        f"nested CV: {search.outer_folds} outer folds, each tuning {search.trials} trials "
        "without its images"
    )
    probs, folds = nested_cv(base, images, search=search, seed=seed, log=say)
    y_pred = probs.argmax(axis=1)
    correct = int(np.sum(y_pred == images.y))
    low, high = wilson_interval(correct, len(images.y))
    counts = metrics.confusion_matrix(images.y, y_pred, labels=range(len(names)))
    say(f"training the final model on all {len(images.y)} images")
    staging = staging_dir(out_dir)
    try:
        final_seconds = time.perf_counter()
        model = transfer.train(
            base, images.x, images.y, best.params, num_classes=len(names), seed=seed
        )
        model_path = staging / MODEL_FILE
        model.save(model_path)
        final_seconds = time.perf_counter() - final_seconds
        release_memory()
        load_model_file(model_path)  # the file the user gets loads safely
        release_memory()
        title = f"{name}: nested-CV accuracy {correct}/{len(images.y)}"
        plots = [
            prediction_grid(images.x, images.y, probs, names, staging / GRID_FILE, title=title),
            figures.confusion_matrix(
                images.y, y_pred, names, staging / CONFUSION_FILE, title=f"{title} (held out)"
            ),
        ]
        card.update(
            {
                "class_names": names,
                "params": best.params,
                "cv": {
                    "accuracy": correct / len(images.y),
                    "correct": correct,
                    "images": len(images.y),
                    "interval": {"method": "wilson", "level": 0.95, "low": low, "high": high},
                    "confusion": {"classes": names, "counts": counts.tolist()},
                    "per_class_accuracy": {
                        n: float(counts[i, i] / max(1, counts[i].sum()))
                        for i, n in enumerate(names)
                    },
                    "outer_folds": folds,
                    "log_loss": transfer.log_loss(images.y, probs),
                    "predictions": [
                        {"image": str(p), "true": names[t], "predicted": names[q]}
                        for p, t, q in zip(images.paths, images.y, y_pred, strict=True)
                    ],
                },
                "tuning": {
                    "best_trial": best.number,
                    "best_cv_log_loss": best.value,
                    "best_cv_accuracy": best.user_attrs.get(TrialKey.CV_ACCURACY),
                    "note": "optimistic: the configuration was chosen on these same folds",
                    "trials": len(study.trials),
                },
                "training": {
                    "images": len(images.y),
                    "seconds": round(final_seconds, 1),
                    "fine_tune_rate_factor": transfer.FINE_TUNE_RATE,
                    "batch_size": transfer.BATCH_SIZE,
                    "device": detect().describe(),
                },
                "sha256": {"model": file_sha256(model_path)},
                "versions": library_versions(),
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        config = {
            "command": command,
            "model": str(base.path),
            "data": str(images.root),
            "classes": names,
            "out": str(out_dir),
            "storage": redact(url),
            "study": name,
            "trials": search.trials,
            "outer_folds": search.outer_folds,
            "inner_folds": search.inner_folds,
            "seed": seed,
            "space": search.space,
        }
        config_path = write_json(staging / CONFIG_FILE, config)
        transfer_card = write_json(staging / TRANSFER_CARD, card)
        card_path = model_card(card, details=TRANSFER_CARD).write(staging)
        say("uploading artifacts")
        ids = attach_files(
            study,
            best,
            [model_path, card_path, transfer_card, *plots, config_path],
            store=artifact_store(artifacts),
        )
        publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        release_memory()
    card["artifacts"] = ids
    study.set_user_attr(
        StudyKey.TRANSFER,
        {"accuracy": card["cv"]["accuracy"], "interval": [low, high], "out": str(out_dir)},
    )
    save_note(study, transfer_note(card, search.space, command))
    say(f"wrote {out_dir}{os.sep}")
    return TransferResult(out_dir, card)
