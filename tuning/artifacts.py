"""Where Optuna artifacts (models, plots, cards) live, and helpers to attach files to trials."""

from __future__ import annotations

import json
import mimetypes
import os
import uuid
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from tuning.errors import StorageError

ENV_ARTIFACTS = "TUNING_ARTIFACTS"
DEFAULT_ARTIFACTS = Path("storage/artifacts")
# optuna_dashboard.artifact._backend: "dashboard:artifacts:<trial_id>:<artifact_id>" study attrs.
DASHBOARD_TRIAL_ARTIFACT_PREFIX = "dashboard:artifacts:"


def artifact_dir(path: str | Path | None = None) -> Path:
    """`path` wins over `TUNING_ARTIFACTS`, which wins over `storage/artifacts`."""
    return Path(path or os.environ.get(ENV_ARTIFACTS) or DEFAULT_ARTIFACTS)


def artifact_store(path: str | Path | None = None) -> FileSystemArtifactStore:
    """The project's artifact store (a folder), created if missing."""
    folder = artifact_dir(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"artifact folder {folder}: cannot create it ({exc.strerror or exc}); choose a "
            f"writable folder with {ENV_ARTIFACTS}"
        ) from None
    if not os.access(folder, os.W_OK):
        raise StorageError(
            f"artifact folder {folder}: not writable; choose another with {ENV_ARTIFACTS}"
        )
    return FileSystemArtifactStore(str(folder))


def artifact_folder(store: FileSystemArtifactStore) -> Path:
    """The folder `store` writes to (Optuna keeps it only in a private attribute)."""
    return Path(getattr(store, "_base_path", "."))


def attach_files(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    files: list[Path],
    *,
    store: FileSystemArtifactStore | None = None,
) -> dict[str, str]:
    """Upload files as artifacts of `trial` (running or finished); returns {file name: id}."""
    store = store or artifact_store()
    if trial.state.is_finished():
        return {f.name: _attach_to_finished_trial(study, trial, f, store) for f in files}
    return {
        f.name: upload_artifact(
            study_or_trial=trial, file_path=str(f), artifact_store=store, storage=study._storage
        )
        for f in files
    }


def _attach_to_finished_trial(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, file: Path, store: FileSystemArtifactStore
) -> str:
    # Optuna refuses to set attrs on a finished trial (UpdateFinishedTrialError), so the metadata
    # goes into a study attr under the key optuna-dashboard lists as that trial's artifacts.
    artifact_id = str(uuid.uuid4())
    with file.open("rb") as reader:
        store.write(artifact_id, reader)
    mimetype, encoding = mimetypes.guess_type(file.name)
    meta = {
        "artifact_id": artifact_id,
        "filename": file.name,
        "mimetype": mimetype or "application/octet-stream",
        "encoding": encoding,
    }
    key = f"{DASHBOARD_TRIAL_ARTIFACT_PREFIX}{trial._trial_id}:{artifact_id}"
    study._storage.set_study_system_attr(study._study_id, key, json.dumps(meta))
    return artifact_id
