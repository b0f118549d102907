"""The run's first step: the carried wheels, unpacked and installed offline into a venv over
the image's packages (the venv itself is made by tools/device_check.sh)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from tools.device_check import MANIFEST, PACK, REQUIREMENTS, ROOT, SCRIPT
from tools.device_check.steps import INSTALL_TIMEOUT, TIMED_OUT
from tools.device_check.wheels import unpack


def install(work: Path, log: TextIO) -> tuple[int, str]:
    """A venv over the image's packages with the carried wheels, made by tools/device_check.sh
    (once per image and wheel set); its return code and its Python."""
    base = sys.executable

    def say(message: str) -> None:
        log.write(message + "\n")
        log.flush()

    say(f"-- the image's python: {base}, {sys.version.split()[0]}")
    if sys.version_info[:2] != (3, 12):
        say("-- warning: the wheels are for CPython 3.12; pip will likely find none that fit")
    if missing := [str(p) for p in (REQUIREMENTS, PACK, MANIFEST) if not (ROOT / p).is_file()]:
        say(f"no {', '.join(missing)}: carry {PACK.parent}")
        return 1, ""
    venv, wheels = work / "venv", work / "wheels"
    python = venv / "bin" / "python"
    digest = hashlib.sha256((ROOT / REQUIREMENTS).read_bytes() + (ROOT / MANIFEST).read_bytes())
    stamp = f"{sys.version} {digest.hexdigest()}"
    installed = venv / ".installed"
    if python.exists() and installed.is_file() and installed.read_text() == stamp:
        say(f"already installed in {venv} (an earlier call)")
        return 0, str(python)
    say(f"-- unpacking {PACK} into {wheels}")
    shutil.rmtree(wheels, ignore_errors=True)
    try:
        say(f"{unpack(ROOT / PACK, wheels, ROOT / MANIFEST)} wheels")
    except (ValueError, OSError) as error:
        say(f"unpacking failed: {error}")
        return 1, ""
    env = {
        **os.environ,
        "BASE": base,
        "VENV": str(venv),
        "WHEELS": str(wheels),
        "REQUIREMENTS": str(ROOT / REQUIREMENTS),
    }
    try:
        rc = subprocess.run(
            ["bash", str(ROOT / SCRIPT), "venv"], stdout=log, stderr=subprocess.STDOUT, env=env,
            timeout=INSTALL_TIMEOUT,
        ).returncode  # fmt: skip
    except subprocess.TimeoutExpired:
        say(f"-- the install took more than {INSTALL_TIMEOUT} s")
        return TIMED_OUT, ""
    if rc != 0:
        return rc, ""
    if not python.exists():  # no venv could be made: installed into the image's user site
        return 0, base
    installed.write_text(stamp)
    return 0, str(python)
