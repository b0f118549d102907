"""`prepare`, here: what the GPU machine needs, in `storage/device/`, small enough to carry."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

from tools.device_check import (
    DEVICE_DIR,
    MANIFEST,
    MNIST,
    PACK,
    REQUIREMENTS,
    SCRIPT,
    WHEELS,
)
from tools.device_check.steps import BUDGET, INSTALL_TIMEOUT
from tools.device_check.wheels import PACKAGES, download, pack, pins_from_env, pins_from_lock, prune

LOCK = Path("constraints.txt")  # the whole tree, pinned (`make lock`)
LIMIT_MIB = 60  # a device call carries 64 MiB with the working tree; keep some room
MIB = 1 << 20


def prepare(*, mnist: str | None) -> None:
    """Pin, download, prune and pack the wheels, copy MNIST, and check the carry's size."""
    if not mnist or not Path(mnist).is_file():
        raise ValueError(f"TUNING_MNIST must name the Keras-layout mnist.npz. Received: {mnist!r}")
    if LOCK.is_file():
        print(f"== pins from {LOCK}")
        pins = pins_from_lock(LOCK, PACKAGES)
    else:
        print(f"== pins from this venv ({LOCK} not found)")
        pins = pins_from_env(PACKAGES)
    DEVICE_DIR.mkdir(parents=True, exist_ok=True)
    WHEELS.mkdir(parents=True, exist_ok=True)
    REQUIREMENTS.write_text(
        f"# Installed on the GPU machine by `bash {SCRIPT} run` from the wheels of {PACK}:\n"
        f"# pip install --no-index --find-links WHEELS -r {REQUIREMENTS}\n"
        f"# Written by `bash {SCRIPT} prepare` from {LOCK if LOCK.is_file() else '.venv'}.\n"
        + "".join(f"{pin}\n" for pin in pins)
    )
    print(f"{len(pins)} packages -> {REQUIREMENTS}")

    print(f"== wheels for CPython 3.12, manylinux x86_64 -> {WHEELS}")
    download(pins, WHEELS)
    prune(WHEELS, pins)
    wheels = sorted(WHEELS.glob("*.whl"))
    print(f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / MIB:.1f} MiB")

    print(f"== packed -> {PACK}")
    manifest = "".join(f"{w.name}\n" for w in wheels)
    if PACK.is_file() and MANIFEST.is_file() and MANIFEST.read_text() == manifest:
        print("up to date")
    else:  # about a minute, at low priority
        os.nice(10)
        pack(WHEELS, PACK)
        MANIFEST.write_text(manifest)
    print(f"{PACK.stat().st_size / MIB:.1f} MiB")

    print(f"== MNIST -> {MNIST}")
    if not MNIST.is_file() or not filecmp.cmp(mnist, MNIST, shallow=False):
        shutil.copyfile(mnist, MNIST)
    # Anything else in the carried folder (an earlier layout) would only take room.
    for path in sorted(set(DEVICE_DIR.iterdir()) - {PACK, MANIFEST, REQUIREMENTS, MNIST}):
        print(f"  removed {path}")
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    print("== carry size")
    device = sum(p.stat().st_size for p in DEVICE_DIR.iterdir())
    tree = working_tree_bytes()
    print(
        f"{DEVICE_DIR}: {device / MIB:.1f} MiB; working tree: {tree / MIB:.1f} MiB; together "
        f"{(device + tree) / MIB:.1f} MiB (limit {LIMIT_MIB} MiB)"
    )
    if device + tree > LIMIT_MIB * MIB:
        raise ValueError(
            f"The carry must stay within {LIMIT_MIB} MiB. Received: {(device + tree) / MIB:.1f} MiB"
        )
    print(
        INSTRUCTIONS.format(script=SCRIPT, carry=DEVICE_DIR, budget=BUDGET, install=INSTALL_TIMEOUT)
    )


def working_tree_bytes() -> int:
    """What a device call copies besides the carry: tracked and untracked, not ignored, files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    paths = [Path(os.fsdecode(name)) for name in listed if name]
    return sum(p.stat().st_size for p in paths if p.is_file())


INSTRUCTIONS = """
Ready. On the GPU machine (the device `run` tool), from the repository root:
  command:   bash {script} run
  carry:     ["{carry}"]
  timeout_s: 450   (install ~30 s, at most {install} s; then steps a-e within BUDGET={budget} s;
                    f usually left out)
then, while it is still warm:
  command:   STEPS="f" bash {script} run      carry ["{carry}"], timeout_s 300
Results come back under $OUT: summary.txt, steps.tsv, <step>-*.log, bench/, models/, device.db.
Rehearse on a CPU with QUICK=1 (python -m tools.device_check run --help lists the settings)."""
