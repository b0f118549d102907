"""`tuning export`: retrain a study's best trial (at the highest rung any trial reached) on all
training images by its own recipe, test it once, and publish the model, its card, its report and
the resolved config as one folder and as Optuna artifacts. The card sets the winner beside the
seed-network baseline trained by the same recipe (exported first when none is stored).

The test split (MNIST's, or the data's own if it has one) is read here and nowhere else; data
without one is exported without a test accuracy, never with an invented one. Everything is
written into a hidden staging folder next to the destination and moved into place only when
complete, so an existing export is never left half-overwritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from tuning import figures
from tuning.artifacts import artifact_store, attach_files
from tuning.device import detect
from tuning.errors import ExportError
from tuning.export.selection import (
    ExportRecord,
    baseline_trial,
    check_compatible,
    default_out_dir,
    load_exportable_study,
    stored_export,
    trial_out_dir,
)
from tuning.hp import OptunaHyperParameters
from tuning.images.dataset import Images, load_images
from tuning.images.mnist import file_sha256
from tuning.model.card import CARD_FILE, ModelCard
from tuning.model.file import load_model_file
from tuning.publish import publish, staging_dir, write_json
from tuning.records import (
    StudyKey,
    TrialKey,
    library_versions,
)
from tuning.storage import open_storage, redact, resolve_storage_url
from tuning.study.config import StudySpec
from tuning.study.curves import read_curves
from tuning.study.hypermodels import UserHyperModel, make_hypermodel
from tuning.study.run import study_precision, training_images
from tuning.study.rungs import (
    highest_rung,
    rung_scores,
)

MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
CONFIG_FILE = "config.json"
LogFn = Callable[[str], None]
EpochFn = Callable[[int, int, dict[str, float]], None]
"""Called as `on_epoch(epoch, epochs, logs)` after every epoch (epoch counts from 1; epochs is 0
when a HyperModel's own fit chooses them)."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what its card says."""

    out_dir: Path
    card: ModelCard


def _epoch_progress(epochs: int, on_epoch: EpochFn | None) -> list[Any]:
    """Keras callbacks that report each epoch as `on_epoch(epoch, epochs, logs)`."""
    import keras

    if on_epoch is None:
        return []
    report = on_epoch
    return [
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: report(
                epoch + 1, epochs, {k: float(v) for k, v in (logs or {}).items()}
            )
        )
    ]


def _evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    probs = np.asarray(model.predict(x, batch_size=500, verbose=0), dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))
    return y_pred, float(np.mean(y_pred == y)), loss


def _test_once(
    model: Any, test: Images, folder: Path, *, title: str, seed: int
) -> tuple[dict[str, Any], list[Path]]:
    """The one evaluation on the test split: the card's `test` section and its two plots."""
    y_pred, accuracy, loss = _evaluate(model, test.x, test.y)
    errors = int(np.sum(y_pred != test.y))
    plots = [
        figures.confusion_matrix(
            test.y,
            y_pred,
            test.class_names,
            folder / "confusion_matrix.png",
            title=f"{title}: test set, accuracy {accuracy:.4f}",
        ),
        figures.prediction_grid(
            test.x,
            test.y,
            y_pred,
            test.class_names,
            folder / "test_predictions.png",
            title=title,
            seed=seed,
        ),
    ]
    return {"accuracy": accuracy, "loss": loss, "errors": errors, "images": len(test.y)}, plots


def _versus(reference: ExportRecord | None, tested: dict[str, Any] | None) -> dict[str, Any] | None:
    """The card's `baseline` section: the seed network's test errors beside this model's."""
    if reference is None or tested is None or reference.test_errors is None:
        return None
    return {
        **dataclasses.asdict(reference),
        "errors_saved": reference.test_errors - tested["errors"],
    }


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
    import keras

    say = log or (lambda _message: None)
    url = resolve_storage_url(storage)
    study, chosen = load_exportable_study(spec, url, trial=trial)
    if epoch_scale is not None and not 0 < epoch_scale <= 20:
        raise ExportError(
            f"must be in (0, 20]. Received: epoch_scale={epoch_scale}", param="epoch_scale"
        )
    settings = (
        dataclasses.replace(spec.export, epoch_scale=epoch_scale) if epoch_scale else spec.export
    )
    if out is not None:
        out_dir = Path(out)
    elif trial is not None:
        out_dir = trial_out_dir(spec.name, trial)
    else:
        out_dir = default_out_dir(spec.name)
    source, train = training_images(spec, data)
    spec = spec.for_images(len(train.y))
    protocol = check_compatible(study, spec, train)
    store = artifact_store(artifacts)  # an unwritable artifact folder fails before training
    staging_dir(out_dir).rmdir()  # an unwritable `out` fails before training too

    seed_trial = baseline_trial(study)
    reference = None
    test = load_images(source, split="test", class_names=train.class_names)
    if (
        baseline
        and test is not None
        and seed_trial is not None
        and seed_trial.number != chosen.number
    ):
        reference = stored_export(
            study, seed_trial.number, epoch_scale=settings.epoch_scale, data_sha256=train.sha256
        )
        if reference is None:
            label = seed_trial.user_attrs.get(TrialKey.BASELINE)
            say(f"first, the baseline (trial #{seed_trial.number}, {label}), same recipe:")
            export_study(
                spec,
                storage=url,
                data=data,
                out=trial_out_dir(spec.name, seed_trial.number, beside=out_dir),
                trial=seed_trial.number,
                epoch_scale=settings.epoch_scale,
                baseline=False,
                artifacts=artifacts,
                log=log,
                on_epoch=on_epoch,
            )
            study = optuna.load_study(study_name=spec.name, storage=open_storage(url))
            reference = stored_export(
                study, seed_trial.number, epoch_scale=settings.epoch_scale, data_sha256=train.sha256
            )

    top = highest_rung(chosen)
    score = rung_scores(chosen)[top]
    hypermodel = make_hypermodel(
        spec,
        input_shape=train.input_shape,
        num_classes=train.num_classes,
        precision=study_precision(study),
        max_epochs=int(protocol["max_epochs"]),
    )
    hp = OptunaHyperParameters(optuna.trial.FixedTrial(chosen.params))  # type: ignore[arg-type]
    # A HyperModel with its own fit chooses its epochs; every other follows the tuned recipe.
    own_fit = isinstance(hypermodel, UserHyperModel) and hypermodel.own_fit
    recipe = None if own_fit else hypermodel.recipe(hp).scaled(settings.epoch_scale)
    epochs = "its own" if recipe is None else str(recipe.epochs)
    staging = staging_dir(out_dir)
    try:
        say(
            f"retraining trial #{chosen.number} (rung {top} CV {score:.4f}) on {len(train.y)} "
            f"images for {epochs} epochs"
        )
        keras.utils.set_random_seed(spec.seed)
        model = hypermodel.build(hp)
        start = time.perf_counter()
        # The trials' own training function, on all images instead of a fold.
        history = hypermodel.fit(
            hp,
            model,
            train.x,
            train.y,
            epoch_scale=settings.epoch_scale,
            callbacks=_epoch_progress(recipe.epochs if recipe else 0, on_epoch),
            seed=spec.seed,
        ).history
        seconds = time.perf_counter() - start
        curves = {k: [float(v) for v in values] for k, values in history.items()}
        # Trained on one-hot labels (label smoothing); users evaluate on integer labels.
        model.compile(
            optimizer=model.optimizer,
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        model_path = staging / MODEL_FILE
        model.save(model_path)
        keras.backend.clear_session()
        gc.collect()
        # Score the file the user gets, loaded the way `tuning predict` loads it.
        model = load_model_file(model_path)
        model.export(str(staging / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
        param_count = int(model.count_params())
        title = f"{spec.name}, trial #{chosen.number}"
        if test is None:
            say(f"{train.source} has no test split: no test accuracy is reported")
            tested, test_plots = None, list[Path]()
        else:
            say(f"evaluating once on the {len(test.y)} test images")
            tested, test_plots = _test_once(model, test, staging, title=title, seed=spec.seed)
        groups = {
            f"trial #{chosen.number}": list(chosen.user_attrs.get(TrialKey.FOLD_ACCURACIES, []))
        }
        if seed_trial is not None and seed_trial.number != chosen.number:
            folds = list(seed_trial.user_attrs.get(TrialKey.FOLD_ACCURACIES, []))
            if folds:
                groups[f"seed network #{seed_trial.number}"] = folds
        plots = [
            figures.learning_curves(
                read_curves(study, chosen, store=store),
                curves,
                staging / "learning_curves.png",
                title=title,
            ),
            figures.fold_accuracies(
                groups,
                staging / "fold_accuracies.png",
                test_accuracy=tested["accuracy"] if tested else None,
                title=title,
            ),
            *test_plots,
        ]
        resolved = {
            "study": {**spec.to_dict(), "export": dataclasses.asdict(settings)},
            "command": {
                "storage": redact(url),
                "data": train.source,
                "out": str(out_dir),
                "trial": trial,
                "epoch_scale_override": epoch_scale,
            },
        }
        config_path = write_json(staging / CONFIG_FILE, resolved)

        say("uploading artifacts")
        ids = attach_files(study, chosen, [model_path, *plots, config_path], store=store)
        record = ExportRecord(
            trial=chosen.number,
            test_accuracy=tested["accuracy"] if tested else None,
            test_errors=tested["errors"] if tested else None,
            test_images=tested["images"] if tested else 0,
            epoch_scale=settings.epoch_scale,
            data_sha256=train.sha256,
            out=str(out_dir),
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        if seed_trial is not None and seed_trial.number == chosen.number:
            reference = record  # the winner is the seed network itself
        card = ModelCard(
            kind="export",
            study=spec.name,
            trial=chosen.number,
            params=chosen.params,
            class_names=train.class_names,
            input=train.input_convention(),
            cv={
                "rung": top,
                "mean": score,
                "std": chosen.user_attrs.get(TrialKey.CV_STD),
                "folds": chosen.user_attrs.get(TrialKey.FOLD_ACCURACIES),
                "rung_scores": rung_scores(chosen),
                "protocol": protocol,
                "train_seconds": chosen.user_attrs.get(TrialKey.TRAIN_SECONDS),
            },
            sha256={"model": file_sha256(model_path), "data": train.sha256},
            versions=library_versions(),
            created=record.created,
            sections={
                "study_file": str(spec.path),
                "storage": redact(url),
                "seed_network": bool(chosen.user_attrs.get(TrialKey.BASELINE)),
                "test": tested,
                "baseline": _versus(reference, tested),
                "training": {
                    "images": len(train.y),
                    "recipe": dataclasses.asdict(recipe) if recipe else "the HyperModel's fit",
                    "epoch_scale": settings.epoch_scale,
                    "seed": spec.seed,
                    "final_loss": curves["loss"][-1],
                    "final_accuracy": curves["accuracy"][-1],
                    "seconds": round(seconds, 2),
                    "device": detect().describe(),
                },
                "param_count": param_count,
                "data": train.source,
                "files": sorted(
                    [MODEL_FILE, SAVED_MODEL_DIR, CARD_FILE, CONFIG_FILE, *(p.name for p in plots)]
                ),
                "artifacts": ids,
            },
        )
        card_path = card.write(staging)
        card.sections["artifacts"] = {
            **ids,
            **attach_files(study, chosen, [card_path], store=store),
        }
        publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        keras.backend.clear_session()
        gc.collect()
    exports = dict(study.user_attrs.get(StudyKey.EXPORTS) or {})
    exports[str(chosen.number)] = dataclasses.asdict(record)
    study.set_user_attr(StudyKey.EXPORTS, exports)
    card_artifact = card.sections["artifacts"][CARD_FILE]
    study.set_user_attr(
        StudyKey.EXPORT, {**dataclasses.asdict(record), "card_artifact": card_artifact}
    )
    say(f"wrote {out_dir}{os.sep}")
    return ExportResult(out_dir, card)
