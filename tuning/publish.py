"""Publishing an output folder (an export, a transfer) whole: `Publication` writes everything
into a hidden staging folder beside the destination, attaches the files to a trial as Optuna
artifacts, and moves the folder into place in one rename, so a reader never sees half an export
and a failed or interrupted run leaves any previous folder as it was."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

import optuna
from optuna.artifacts import FileSystemArtifactStore

from tuning.artifacts import attach_files
from tuning.errors import ExportError


class Publication:
    """`with Publication(out_dir) as publication:` write into `publication.staging`, `upload`
    files as artifacts of a trial, then `commit()`. Leaving the block without a commit (an
    error, Ctrl-C) removes the staging folder and nothing else.

    Raises:
        ExportError: `out_dir` cannot be written (raised on creation, before any work).
    """

    def __init__(self, out_dir: Path, *, store: FileSystemArtifactStore) -> None:
        self.out_dir = out_dir
        self.store = store
        self.staging = staging_dir(out_dir)
        self.artifacts: dict[str, str] = {}  # file name -> artifact id, in upload order
        self.committed = False

    def __enter__(self) -> Publication:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.committed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def upload(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, files: list[Path]
    ) -> dict[str, str]:
        """Attach `files` to `trial` as artifacts; returns {file name: artifact id}."""
        ids = attach_files(study, trial, files, store=self.store)
        self.artifacts.update(ids)
        return ids

    def commit(self) -> None:
        """Move the staging folder into place; a previous folder goes only once it is in."""
        publish(self.staging, self.out_dir)
        self.committed = True

    @staticmethod
    def check_writable(out_dir: Path) -> None:
        """Raise ExportError now if `out_dir` could not be published later."""
        staging_dir(out_dir).rmdir()


def staging_dir(out_dir: Path) -> Path:
    """A fresh hidden folder beside `out_dir` (same file system, so the final move is atomic)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder", param="out")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent)
        )
        staging.chmod(0o755)  # mkdtemp's 0o700 would hide the published export from other users
        return staging
    except OSError as exc:
        raise ExportError(
            f"{out_dir}: cannot write to {out_dir.parent} ({exc.strerror or exc}); choose "
            "a writable folder",
            param="out",
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
