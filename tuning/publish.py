"""Publishing an output folder (an export, a transfer) whole: `Publication` writes everything
into a hidden staging folder beside the destination, attaches the files to a trial as Optuna
artifacts, and moves the folder into place in one rename, so a reader never sees half an export
and a failed or interrupted run leaves any previous folder as it was.

A write the file system refuses (no space left, over quota, read-only, no permission) becomes
one `WriteError` line naming the path, the space needed and free, and that the previous folder is
unchanged: inside a publication by the publication itself, elsewhere by `disk_errors`."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import optuna
from optuna.artifacts import FileSystemArtifactStore

from tuning.artifacts import artifact_folder, attach_files
from tuning.errors import ExportError, TuningError, WriteError

# How a file system refuses a write, in the message's words.
REFUSALS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}


class Publication:
    """`with Publication(out_dir) as publication:` write into `publication.staging`, `upload`
    files as artifacts of a trial, then `commit()`. Leaving the block without a commit (an
    error, Ctrl-C) removes the staging folder and nothing else.

    Raises:
        ExportError: `out_dir` cannot be written (raised on creation, before any work).
        WriteError: in the block, the file system refused a write (say, the disk is full).
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
        if self.committed:
            return
        if error is None or refused_write(error) is None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        staged = folder_bytes(self.staging)
        shutil.rmtree(self.staging, ignore_errors=True)  # first, so the space it took is free
        # The new folder takes about what the previous one does; without one, more than what
        # was staged when the write failed.
        previous = self.out_dir.is_dir()
        size = folder_bytes(self.out_dir) if previous else staged
        needed = f"{'about' if previous else 'over'} {format_bytes(size)}" if size else None
        fault = write_fault(
            error, self.staging, shown_as=self.out_dir, unchanged=self.out_dir, needed=needed
        )
        raise fault from error

    def upload(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, files: list[Path]
    ) -> dict[str, str]:
        """Attach `files` to `trial` as artifacts; returns {file name: artifact id}."""
        folder = artifact_folder(self.store)
        needed = format_bytes(sum(f.stat().st_size for f in files if f.is_file()))
        with disk_errors(folder, unchanged=self.out_dir, needed=needed):
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


def refused_write(error: BaseException) -> int | None:
    """The errno by which the file system refused a write, if that is what `error` says: an
    OSError's own, or a full disk in a library's own error (TensorFlow's, writing a
    SavedModel), which quotes the system's message."""
    if isinstance(error, OSError):
        return error.errno if error.errno in REFUSALS else None
    if isinstance(error, TuningError) or not isinstance(error, Exception):
        return None
    text = str(error)
    return next((code for code in (errno.ENOSPC, errno.EDQUOT) if os.strerror(code) in text), None)


@contextlib.contextmanager
def disk_errors(
    folder: Path, *, unchanged: Path | None = None, needed: str | None = None
) -> Iterator[None]:
    """Writes into `folder` whose refusal by the file system is one `WriteError` line (see
    `write_fault`); any other error passes unchanged.

    Raises:
        WriteError: the file system refused a write (say, the disk is full).
    """
    try:
        yield
    except Exception as error:
        if refused_write(error) is None:
            raise
        raise write_fault(error, folder, unchanged=unchanged, needed=needed) from error


def write_fault(
    error: BaseException,
    folder: Path,
    *,
    shown_as: Path | None = None,
    unchanged: Path | None = None,
    needed: str | None = None,
) -> WriteError:
    """The one line for a write into `folder` that the file system refused: the file (else
    `folder`; a path under `folder` shown under `shown_as`), why, the space `needed` (e.g.
    "about 4.5 MB") and free, what to do, and that `unchanged` is as it was. E.g. "cannot
    write models/mnist_cnn/model.keras: no space left on device (about 4.5 MB needed, 200 KB
    free on /mnt/x); free some space and run it again; the previous export in models/mnist_cnn
    is unchanged"."""
    code = refused_write(error) or errno.ENOSPC
    path = _named_path(error) or folder
    inside = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    if shown_as is not None and inside[0].is_relative_to(inside[1]):
        path = shown_as / inside[0].relative_to(inside[1])
    space = [f"{needed} needed"] if needed else []
    if code == errno.ENOSPC:
        place = _existing(path)
        space.append(f"{format_bytes(shutil.disk_usage(place).free)} free on {_mount(place)}")
    detail = f" ({', '.join(space)})" if space else ""
    full = code in (errno.ENOSPC, errno.EDQUOT)
    action = "free some space" if full else f"make {_existing(path)} writable"
    kept = ""
    if unchanged is not None:
        kept = (
            f"; the previous export in {unchanged} is unchanged"
            if unchanged.is_dir()
            else f"; nothing was published to {unchanged}"
        )
    return WriteError(
        f"cannot write {path}: {REFUSALS[code]}{detail}; {action} and run it again{kept}"
    )


def _named_path(error: BaseException) -> Path | None:
    """The file an OSError names as written: a copy's or a move's target, else its one file."""
    for name in (getattr(error, "filename2", None), getattr(error, "filename", None)):
        if isinstance(name, str | os.PathLike):
            return Path(name)
    return None


def _existing(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mount(path: Path) -> Path:
    """The mount point of the file system that holds `path` (an existing path)."""
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under `folder` (0 if it is missing)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def format_bytes(size: int) -> str:
    """`size` in words, in decimal units: "4.5 MB", "200 KB", "1.2 GB"."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e3:.0f} KB"
