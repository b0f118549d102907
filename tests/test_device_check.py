"""The device check's wheels: pruned to the pins, packed here, and unpacked on the GPU image into
wheels with the same files (what `bench/device_check.sh` carries and installs offline)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench.device_check import pack, prune
from tests.conftest import ROOT


def wheel(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w") as z:
        for member, data in files.items():
            z.writestr(member, data)
    return path


def test_wheels_are_pruned_to_the_pins_and_come_back_whole(tmp_path: Path) -> None:
    folder = tmp_path / "wheels"
    folder.mkdir()
    files = {"keras/__init__.py": b"x = 1\n", "keras-3.15.1.dist-info/METADATA": b"Name: keras"}
    wheel(folder, "keras-3.15.1-py3-none-any.whl", files)
    wheel(folder, "keras-3.0.0-py3-none-any.whl", {"old.py": b""})  # an earlier prepare's
    wheel(folder, "Mako-1.3.10-py3-none-any.whl", {"mako/__init__.py": b"y = 2\n"})
    (folder / "notes.txt").write_text("not a wheel")
    prune(folder, ["keras==3.15.1", "mako==1.3.10"])
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == ["Mako-1.3.10-py3-none-any.whl", "keras-3.15.1-py3-none-any.whl"]

    pack(folder, tmp_path / "wheels.tar.xz")
    (tmp_path / "wheels.txt").write_text("\n".join(kept))
    out = tmp_path / "unpacked"
    with open(tmp_path / "wheels.tar.xz", "rb") as archive:  # as the image's Python reads it
        done = subprocess.run(
            [sys.executable, "-m", "bench.device_check", "unpack", str(out),
             str(tmp_path / "wheels.txt"), "r|xz"],
            stdin=archive, cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == kept
    with zipfile.ZipFile(out / "keras-3.15.1-py3-none-any.whl") as z:
        assert {name: z.read(name) for name in z.namelist()} == files
    with pytest.raises(SystemExit, match=r"no wheel for: \[\('optuna', '5.0.0'\)\]"):
        prune(folder, ["keras==3.15.1", "mako==1.3.10", "optuna==5.0.0"])
