"""A trial's per-fold, per-epoch learning curves, kept as artifacts (JSON + PNG), not attributes.

A user attribute holding every epoch of every fold shows as one very long line in the dashboard's
trial view; as artifacts, the curves are a picture there and a file for `tuning export`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from tuning import figures
from tuning.artifacts import artifact_folder
from tuning.publish import disk_errors
from tuning.records import TrialKey

CURVES_JSON = "cv_curves.json"
CURVES_PNG = "cv_curves.png"
# Where trials of studies stored before the curves became artifacts keep them.

Histories = list[dict[str, list[float]]]


def attach_curves(trial: optuna.Trial, histories: Histories, *, store: Any, title: str) -> None:
    """Upload `histories` (one dict of per-epoch metrics per fold) as JSON and as a plot to the
    running `trial`. A full disk fails the trial with one line naming the path."""
    artifacts = artifact_folder(store)
    with disk_errors(artifacts), tempfile.TemporaryDirectory(prefix="tuning-curves-") as folder:
        data = Path(folder) / CURVES_JSON
        data.write_text(json.dumps({"folds": histories}), encoding="utf-8")
        plot = figures.learning_curves(histories, {}, Path(folder) / CURVES_PNG, title=title)
        for path in (data, plot):
            upload_artifact(study_or_trial=trial, file_path=str(path), artifact_store=store)


def read_curves(study: optuna.Study, trial: FrozenTrial, *, store: Any) -> Histories:
    """The fold histories of a finished `trial`: from its curves artifact, else from the user
    attribute older studies used; empty when neither is there (a missing artifact folder)."""
    for meta in get_all_artifact_meta(trial, storage=study._storage):
        if meta.filename == CURVES_JSON:
            try:
                with store.open_reader(meta.artifact_id) as reader:
                    return list(json.loads(reader.read())["folds"])
            except (ArtifactNotFound, OSError, ValueError, KeyError):
                break
    return list(trial.user_attrs.get(TrialKey.FOLD_HISTORIES, []))
