"""Files an export keeps on disk to save work later (its members' networks and predictions, a
baseline export set beside later ones), verified before they are trusted: the sha256 of each
is recorded when it is written and checked when it is read back, so a file damaged since
(truncated, written to a full disk, bit rot) is made again instead of shipped."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from tuning.images.mnist import file_sha256


def file_hashes(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """The sha256 of each file `names` in `folder`, by name: what a record keeps of them."""
    return {name: file_sha256(folder / name) for name in names}


def kept_files_problem(
    folder: Path, names: Iterable[str], recorded: Mapping[str, str], *, record: Path
) -> str | None:
    """Why the files `names` kept in `folder` cannot be trusted, in words naming the file, or
    None when each is there with the sha256 `recorded` for it in `record` when it was written."""
    for name in names:
        path = folder / name
        expected = recorded.get(name)
        if expected is None:
            return f"{record} records no sha256 of {name} (written by an older version)"
        if not path.is_file():
            return f"kept file {path} is missing"
        try:
            actual = file_sha256(path)
        except OSError as exc:
            return f"kept file {path} cannot be read ({exc.strerror or type(exc).__name__})"
        if actual != expected:
            return (
                f"kept file {path} does not match its recorded sha256 (damaged after it was "
                "written)"
            )
    return None
