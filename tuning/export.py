"""`tuning export`: retrain a study's best trial on all training images, test it once, and publish
the model, its card, its report and the resolved config as one folder and as Optuna artifacts.

The MNIST test split is read here and nowhere else. Everything is written into a hidden staging
folder next to the destination and moved into place only when complete, so an existing export is
never left half-overwritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tuning import report
from tuning.artifacts import artifact_store, attach_files
from tuning.config import StudySpec
from tuning.curves import read_curves
from tuning.data import file_sha256, load_mnist
from tuning.device import detect
from tuning.errors import ExportError, StudyMismatchError
from tuning.modelfile import CARD_FILE, load_model_file
from tuning.retrain import EpochFn, retrain
from tuning.space import CNNHyperModel, describe_space, space_fingerprint
from tuning.storage import open_storage, redact, resolve_storage_url, study_names
from tuning.study import library_versions, study_precision

DEFAULT_MODELS = Path("storage/models")
MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
CONFIG_FILE = "config.json"
DIGITS = [str(d) for d in range(10)]
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what its card says."""

    out_dir: Path
    card: dict[str, Any]


def default_out_dir(study_name: str) -> Path:
    """`storage/models/<study>`."""
    return DEFAULT_MODELS / study_name


def load_exportable_study(spec: StudySpec, storage: str | None) -> tuple[optuna.Study, FrozenTrial]:
    """The stored study of `spec` and its best completed trial.

    Raises:
        ExportError: the database or the study does not exist, or no trial has completed.
    """
    url = resolve_storage_url(storage)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        database = Path(url.removeprefix("sqlite:///"))
        if not database.is_file():
            raise ExportError(
                f"no study database at {database}; run `tuning study {spec.path}` first "
                "or pass --storage"
            )
    rdb = open_storage(url)
    if spec.name not in study_names(rdb):
        stored = ", ".join(study_names(rdb)) or "none"
        raise ExportError(
            f"study '{spec.name}' (from {spec.path}) not found in {redact(url)}; run `tuning "
            f"study {spec.path}` first. Stored studies: {stored}"
        )
    study = optuna.load_study(study_name=spec.name, storage=rdb)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ExportError(
            f"study '{spec.name}' in {redact(url)} has no completed trial yet; run `tuning study "
            f"{spec.path}` until one completes"
        )
    return study, study.best_trial


def check_compatible(study: optuna.Study, spec: StudySpec, data_sha256: str) -> None:
    """The best trial can be rebuilt: same training data file and same search-space code.

    Raises:
        StudyMismatchError: the data file or the search space differ from the study's.
    """
    protocol = study.user_attrs.get("protocol") or {}
    stored_sha = protocol.get("data_sha256")
    if stored_sha and stored_sha != data_sha256:
        raise StudyMismatchError(
            f"study '{spec.name}' was tuned on data with sha256 {stored_sha[:12]}…, but the data "
            f"given now has {data_sha256[:12]}…; pass the same file with --data or $TUNING_MNIST"
        )
    stored_space = protocol.get("space_fingerprint")
    space = space_fingerprint(describe_space(CNNHyperModel(max_epochs=spec.fidelity.max_epochs)))
    if stored_space and stored_space != space:
        raise StudyMismatchError(
            f"study '{spec.name}' was tuned with search space {stored_space}, but tuning/space.py "
            f"now defines {space}; its trials can no longer be rebuilt faithfully"
        )


def staging_dir(out_dir: Path) -> Path:
    """A fresh hidden folder beside `out_dir` (same file system, so the final move is atomic)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir}: exists and is not a folder")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent)
        )
        staging.chmod(0o755)  # mkdtemp's 0o700 would hide the published export from other users
        return staging
    except OSError as exc:
        raise ExportError(
            f"--out {out_dir}: cannot write to {out_dir.parent} ({exc.strerror or exc}); choose "
            "a writable folder"
        ) from None


def publish(staging: Path, out_dir: Path) -> None:
    """Replace `out_dir` by `staging`; a previous export is deleted only once the new one is in."""
    previous = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.old")
    had_previous = out_dir.exists()
    if had_previous:
        out_dir.rename(previous)
    try:
        staging.rename(out_dir)
    except OSError:
        if had_previous:
            previous.rename(out_dir)
        raise
    if had_previous:
        shutil.rmtree(previous, ignore_errors=True)


def _write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _baseline_folds(study: optuna.Study, best: FrozenTrial) -> tuple[int, list[float]] | None:
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get("baseline") and trial.number != best.number:
            return trial.number, list(trial.user_attrs.get("fold_accuracies", []))
    return None


def _evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    probs = np.asarray(model.predict(x[..., None], batch_size=500, verbose=0), dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))
    return y_pred, float(np.mean(y_pred == y)), loss


def export_study(
    spec: StudySpec,
    *,
    storage: str | None = None,
    data: str | Path | None = None,
    out: str | Path | None = None,
    epochs: int | None = None,
    artifacts: str | Path | None = None,
    log: LogFn | None = None,
    on_epoch: EpochFn | None = None,
) -> ExportResult:
    """Retrain the best trial of `spec`'s study on every training image, evaluate it once on the
    test set and publish `model.keras`, `saved_model/`, `model_card.json`, the report plots and
    `config.json` to `out` (default `storage/models/<study>`), also as artifacts of the trial.

    `epochs` overrides `[export] epochs`; `artifacts` overrides `$TUNING_ARTIFACTS`.

    Raises:
        ExportError: no such study or completed trial, or `out` cannot be written.
        StudyMismatchError: the data or the search space changed since the study ran.
        DataError: the MNIST file is missing or malformed.
    """
    import keras

    say = log or (lambda _message: None)
    url = resolve_storage_url(storage)
    study, best = load_exportable_study(spec, url)
    if epochs is not None and not 1 <= epochs <= 500:
        raise ExportError(f"--epochs must be in 1..500. Received: {epochs}")
    settings = dataclasses.replace(spec.export, epochs=epochs) if epochs else spec.export
    out_dir = Path(out) if out is not None else default_out_dir(spec.name)
    train = load_mnist(data, split="train")
    check_compatible(study, spec, train.sha256)
    store = artifact_store(artifacts)  # an unwritable artifact folder fails before training
    staging = staging_dir(out_dir)
    try:
        say(
            f"retraining trial #{best.number} (CV {best.value:.4f}) on {len(train.y)} images "
            f"for {settings.epochs} epochs"
        )
        trained = retrain(
            best.params,
            train.x[..., None],
            train.y,
            settings=settings,
            seed=spec.seed,
            precision=study_precision(study),  # as the trial was scored
            on_epoch=on_epoch,
        )
        model_path = staging / MODEL_FILE
        trained.model.save(model_path)
        keras.backend.clear_session()
        gc.collect()

        # Score the file the user gets, loaded the way `tuning predict` loads it.
        model = load_model_file(model_path)
        test = load_mnist(data, split="test")
        say(f"evaluating once on the {len(test.y)} test images")
        y_pred, accuracy, loss = _evaluate(model, test.x, test.y)
        model.export(str(staging / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
        param_count = int(model.count_params())

        title = f"{spec.name}, trial #{best.number}"
        groups = {f"best #{best.number}": list(best.user_attrs.get("fold_accuracies", []))}
        baseline = _baseline_folds(study, best)
        if baseline and baseline[1]:
            groups[f"seed network #{baseline[0]}"] = baseline[1]
        plots = [
            report.learning_curves(
                read_curves(study, best, store=store),
                trained.history,
                staging / "learning_curves.png",
                title=title,
            ),
            report.fold_accuracies(
                groups, staging / "fold_accuracies.png", test_accuracy=accuracy, title=title
            ),
            report.confusion_matrix(
                test.y,
                y_pred,
                DIGITS,
                staging / "confusion_matrix.png",
                title=f"{title}: test set, accuracy {accuracy:.4f}",
            ),
            report.prediction_grid(
                test.x,
                test.y,
                y_pred,
                DIGITS,
                staging / "test_predictions.png",
                title=title,
                seed=spec.seed,
            ),
        ]
        resolved = {
            "study": {**spec.to_dict(), "export": dataclasses.asdict(settings)},
            "command": {
                "storage": redact(url),
                "data": train.source,
                "out": str(out_dir),
                "epochs_override": epochs,
            },
        }
        config_path = _write_json(staging / CONFIG_FILE, resolved)

        say("uploading artifacts")
        ids = attach_files(study, best, [model_path, *plots, config_path], store=store)
        card: dict[str, Any] = {
            "card_version": 1,
            "study": spec.name,
            "study_file": str(spec.path),
            "storage": redact(url),
            "trial": best.number,
            "seed_network": bool(best.user_attrs.get("baseline")),
            "params": best.params,
            "cv": {
                "mean": best.value,
                "std": best.user_attrs.get("cv_std"),
                "folds": best.user_attrs.get("fold_accuracies"),
                "protocol": study.user_attrs.get("protocol"),
                "train_seconds": best.user_attrs.get("train_seconds"),
            },
            "test": {
                "accuracy": accuracy,
                "loss": loss,
                "errors": int(np.sum(y_pred != test.y)),
                "images": len(test.y),
            },
            "training": {
                "images": len(train.y),
                "epochs": trained.epochs,
                "batch_size": trained.batch_size,
                "learning_rate": trained.learning_rate,
                "seed": spec.seed,
                "settings": dataclasses.asdict(settings),
                "final_loss": trained.history["loss"][-1],
                "final_accuracy": trained.history["accuracy"][-1],
                "seconds": round(trained.seconds, 2),
                "device": detect().describe(),
            },
            "param_count": param_count,
            "sha256": {"model": file_sha256(model_path), "data": train.sha256},
            "data": train.source,
            "class_names": DIGITS,
            "input": {
                "shape": [28, 28, 1],
                "range": "0..255",
                "ink": "light on dark",
                "preprocess": "tuning.preprocess.prepare_image",
            },
            "versions": library_versions(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "files": sorted(
                [MODEL_FILE, SAVED_MODEL_DIR, CARD_FILE, CONFIG_FILE, *(p.name for p in plots)]
            ),
            "artifacts": ids,
        }
        card_path = _write_json(staging / CARD_FILE, card)
        card["artifacts"] = {**ids, **attach_files(study, best, [card_path], store=store)}
        publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        keras.backend.clear_session()
        gc.collect()
    study.set_user_attr(
        "export",
        {
            "trial": best.number,
            "test_accuracy": accuracy,
            "out": str(out_dir),
            "card_artifact": card["artifacts"][CARD_FILE],
            "created": card["created"],
        },
    )
    say(f"wrote {out_dir}{os.sep}")
    return ExportResult(out_dir, card)
