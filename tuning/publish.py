"""Atomic publishing of an output folder: everything is written to a hidden staging folder beside
it, then moved into place in one rename, so a reader never sees half an export. The JSON files
of an export or a transfer (config, cards) are written by `write_json`."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from tuning.errors import ExportError


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


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write `payload` as indented JSON (values it cannot encode as strings); returns `path`."""
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path
