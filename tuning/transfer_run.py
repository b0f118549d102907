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
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from tuning import report, transfer
from tuning.artifacts import artifact_store, attach_files
from tuning.cv import release_memory
from tuning.data import file_sha256
from tuning.errors import DataError, StudyMismatchError, TrainingDivergedError, TuningError
from tuning.export import _publish, _staging_dir
from tuning.imagefolder import ImageFolder, load_image_folder, resolve_data_dir
from tuning.modelfile import CARD_FILE, load_model_file
from tuning.notes import write_study_note
from tuning.space import space_fingerprint
from tuning.storage import open_storage, redact, resolve_storage_url
from tuning.study import library_versions
from tuning.transfer_report import confusion, prediction_grid, transfer_note, wilson_interval

DEFAULT_MODELS = Path("storage/models")
MODEL_FILE = "model.keras"
TRANSFER_CARD = "transfer_card.json"
CONFIG_FILE = "config.json"
GRID_FILE = "cv_predictions.png"
CONFUSION_FILE = "confusion_matrix.png"
DEFAULT_TRIALS = 12
DEFAULT_OUTER_FOLDS = 3
INNER_FOLDS = 3
# Generic split names say nothing about a dataset; its parent folder ("greek") does.
_SPLIT_NAMES = {"train", "training", "data", "images"}
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class Search:
    """How configurations are searched and scored: trials per search, the folds of the nested CV,
    and the search space (KerasTuner-style configs, `tuning.transfer.SPACE` by default)."""

    trials: int = DEFAULT_TRIALS
    outer_folds: int = DEFAULT_OUTER_FOLDS
    inner_folds: int = INNER_FOLDS
    space: list[dict[str, Any]] = field(default_factory=lambda: transfer.SPACE)


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


def _suggest(trial: optuna.Trial, space: list[dict[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in space:
        low, high, name = p["min_value"], p["max_value"], p["name"]
        if p["class"] == "Int":
            params[name] = trial.suggest_int(name, low, high, step=p.get("step", 1))
        elif p.get("sampling") == "log":
            params[name] = trial.suggest_float(name, low, high, log=True)
        else:
            params[name] = trial.suggest_float(name, low, high, step=p.get("step"))
    return params


def _sampler(seed: int, trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(
        n_startup_trials=max(1, min(5, trials // 2)), multivariate=True, seed=seed
    )


def _objective(
    base: transfer.BaseModel,
    x: np.ndarray,
    y: np.ndarray,
    search: Search,
    num_classes: int,
    seed: int,
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        params = _suggest(trial, search.space)
        start = time.perf_counter()
        try:
            probs = transfer.held_out_probabilities(
                base, x, y, params, num_classes=num_classes, folds=search.inner_folds, seed=seed
            )
        except TrainingDivergedError as exc:
            trial.set_user_attr("failed_because", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr("cv_accuracy", float(np.mean(probs.argmax(axis=1) == y)))
        trial.set_user_attr("train_seconds", round(time.perf_counter() - start, 2))
        return transfer.log_loss(y, probs)

    return objective


def tune(
    study: optuna.Study,
    base: transfer.BaseModel,
    x: np.ndarray,
    y: np.ndarray,
    *,
    search: Search,
    num_classes: int,
    seed: int,
) -> optuna.trial.FrozenTrial:
    """Run trials until `study` has `search.trials` finished ones; its best trial."""
    trials = search.trials
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if not study.trials:
        defaults = {p["name"]: p["default"] for p in search.space}
        study.enqueue_trial(defaults, user_attrs={"baseline": "default transfer"})
    study.sampler = _sampler(seed + len(study.trials), trials)
    if trials > done:
        study.optimize(
            _objective(base, x, y, search, num_classes, seed),
            n_trials=trials - done,
            gc_after_trial=True,
        )
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise TuningError(f"transfer study '{study.study_name}': no trial completed")
    return study.best_trial


def nested_cv(
    base: transfer.BaseModel,
    data: ImageFolder,
    *,
    search: Search,
    seed: int,
    log: LogFn,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Held-out probabilities of every image, each from a model tuned and trained without it;
    and per outer fold its chosen parameters and accuracy."""
    num_classes = len(data.class_names)
    probs = np.zeros((len(data.y), num_classes))
    folds = []
    outer_folds = search.outer_folds
    splits = transfer.stratified_folds(data.y, folds=outer_folds, seed=seed + 1)
    for fold, (train_idx, held_idx) in enumerate(splits):
        start = time.perf_counter()
        inner = optuna.create_study(direction="minimize")
        best = tune(
            inner,
            base,
            data.x[train_idx],
            data.y[train_idx],
            search=search,
            num_classes=num_classes,
            seed=seed + 1000 * (fold + 1),
        )
        try:
            model = transfer.train(
                base,
                data.x[train_idx],
                data.y[train_idx],
                best.params,
                num_classes=num_classes,
                seed=seed + 1000 * (fold + 1),
            )
            probs[held_idx] = transfer.predict_proba(model, data.x[held_idx])
        finally:
            release_memory()
        accuracy = float(np.mean(probs[held_idx].argmax(axis=1) == data.y[held_idx]))
        folds.append(
            {
                "held_out": len(held_idx),
                "accuracy": accuracy,
                "params": best.params,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        log(
            f"  outer fold {fold + 1}/{outer_folds}: accuracy {accuracy:.3f} on "
            f"{len(held_idx)} held-out images ({folds[-1]['seconds']:.0f} s)"
        )
    return probs, folds


def open_transfer_study(url: str, name: str, protocol: dict[str, Any]) -> tuple[optuna.Study, bool]:
    """Create the study, or resume it if it was made with the same protocol.

    Raises:
        StudyMismatchError: a study of that name exists with another base model, data or space.
    """
    storage = open_storage(url)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize")
        study.set_user_attr("protocol", protocol)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name)
    stored = study.user_attrs.get("protocol")
    if stored is None and not study.trials:
        # A run stopped between creating the study and recording its protocol.
        study.set_user_attr("protocol", protocol)
        return study, True
    stored = stored or {}
    for key, want in protocol.items():
        if stored.get(key) != want:
            raise StudyMismatchError(
                f"transfer study '{name}' in {redact(url)} was made with {key}="
                f"{_short(stored.get(key))}, but this run has {key}={_short(want)}; pass "
                "--study with a new name (or another --storage) to start afresh"
            )
    return study, False


def check_search(search: Search) -> None:
    """Raises TuningError for a trial or fold count out of range."""
    if not 1 <= search.trials <= 500:
        raise TuningError(f"--trials must be in 1..500. Received: {search.trials}")
    if not 2 <= search.outer_folds <= 20:
        raise TuningError(f"--folds must be in 2..20. Received: {search.outer_folds}")
    if not 2 <= search.inner_folds <= 20:
        raise TuningError(f"inner folds must be in 2..20. Received: {search.inner_folds}")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_sizes(data: ImageFolder, search: Search) -> None:
    """Each class must fill every outer fold, and every inner fold of each outer training part."""
    outer, inner = search.outer_folds, search.inner_folds

    def enough(n: int) -> bool:
        # The smallest outer training part of a class of n images holds n - ceil(n / outer).
        return n >= outer and n - -(-n // outer) >= inner

    need = next(n for n in range(2, 10_000) if enough(n))
    for name, count in data.counts().items():
        if not enough(count):
            raise DataError(
                f"{data.root / name}: {count} usable image(s) in class '{name}'; nested CV with "
                f"{outer} outer and {inner} inner folds needs at least {need} per class"
            )


def _write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def protocol_summary(search: Search, seed: int) -> str:
    """The scoring protocol in a paragraph, for the card, the note and the README."""
    trials, outer_folds, inner_folds = search.trials, search.outer_folds, search.inner_folds
    return (
        f"Nested cross-validation (seed {seed}). The images are split into {outer_folds} "
        f"stratified outer folds. For each, a fresh TPE search of {trials} trials (each scored by "
        f"{inner_folds}-fold stratified CV log loss) runs on the other folds only; its winner is "
        "trained on them and predicts the held-out fold. Every image is so predicted once by a "
        "model whose tuning and training never saw it. Accuracy: the pooled held-out "
        "predictions; 95% interval: Wilson score interval with n = the number of images. "
        f"Remaining bias: slightly pessimistic, as each outer model learns from "
        f"{outer_folds - 1}/{outer_folds} of the images the final model uses; the interval "
        "covers image sampling only, not new writers, pens or paper."
    )


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
    _check_sizes(images, search)
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
            "test_accuracy": (base.card.get("test") or {}).get("accuracy"),
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
    write_study_note(study, transfer_note(card, search.space, command))
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
    counts = confusion(images.y, y_pred, len(names))
    say(f"training the final model on all {len(images.y)} images")
    staging = _staging_dir(out_dir)
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
            report.confusion_matrix(
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
                    "best_cv_accuracy": best.user_attrs.get("cv_accuracy"),
                    "note": "optimistic: the configuration was chosen on these same folds",
                    "trials": len(study.trials),
                },
                "training": {
                    "images": len(images.y),
                    "seconds": round(final_seconds, 1),
                    "fine_tune_rate_factor": transfer.FINE_TUNE_RATE,
                    "batch_size": transfer.BATCH_SIZE,
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
        config_path = _write_json(staging / CONFIG_FILE, config)
        transfer_card = _write_json(staging / TRANSFER_CARD, card)
        model_card = _write_json(staging / CARD_FILE, _model_card(card))
        say("uploading artifacts")
        ids = attach_files(
            study,
            best,
            [model_path, model_card, transfer_card, *plots, config_path],
            store=artifact_store(artifacts),
        )
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        release_memory()
    card["artifacts"] = ids
    study.set_user_attr(
        "transfer",
        {"accuracy": card["cv"]["accuracy"], "interval": [low, high], "out": str(out_dir)},
    )
    write_study_note(study, transfer_note(card, search.space, command))
    say(f"wrote {out_dir}{os.sep}")
    return TransferResult(out_dir, card)


def _model_card(card: dict[str, Any]) -> dict[str, Any]:
    """The card `tuning predict` reads (class names), shaped like an export's."""
    return {
        "card_version": 1,
        "kind": "transfer",
        "study": card["study"],
        "trial": card["tuning"]["best_trial"],
        "params": card["params"],
        "class_names": card["class_names"],
        "cv": {
            "accuracy": card["cv"]["accuracy"],
            "interval": card["cv"]["interval"],
            "protocol": card["protocol"]["summary"],
        },
        "base": card["base"],
        "sha256": card["sha256"],
        "input": {
            "shape": [28, 28, 1],
            "range": "0..255",
            "ink": "light on dark",
            "preprocess": "tuning.preprocess.prepare_image",
        },
        "versions": card["versions"],
        "created": card["created"],
        "details": TRANSFER_CARD,
    }
