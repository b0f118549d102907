"""The check of a lent GPU machine (tools/device_check/): the wheels it carries, pinned, pruned,
packed here and unpacked there whole; the command lines it passes, parsed by the real parsers;
its steps' time limits; and its run, which starts on the GPU image's bare Python."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import bench.backends
import bench.workers
from tools.device_check import ROOT
from tools.device_check.steps import (
    TIMED_OUT,
    Context,
    StepFailed,
    backends_argv,
    export_argv,
    study_argv,
    workers_argv,
)
from tools.device_check.wheels import PACKAGES, pack, pins_from_lock, prune, unpack
from tuning.cli import build_parser


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
    assert unpack(tmp_path / "wheels.tar.xz", out, tmp_path / "wheels.txt") == 2
    assert sorted(p.name for p in out.iterdir()) == kept
    with zipfile.ZipFile(out / "keras-3.15.1-py3-none-any.whl") as z:
        assert {name: z.read(name) for name in z.namelist()} == files
    with pytest.raises(ValueError, match=r"Received: none of optuna==5.0.0$"):
        prune(folder, ["keras==3.15.1", "mako==1.3.10", "optuna==5.0.0"])


def test_the_pins_come_from_the_lock_one_version_each(tmp_path: Path) -> None:
    lock = tmp_path / "constraints.txt"
    lines = [f"{name.upper()}==1.0.{i}\n    # via tuning" for i, name in enumerate(PACKAGES)]
    lock.write_text("# made by a tool\n" + "\n".join(lines) + "\nother==2.0\n")
    pins = pins_from_lock(lock, PACKAGES)
    assert pins[:2] == ["keras==1.0.0", "keras-tuner==1.0.1"] and len(pins) == len(PACKAGES)
    lock.write_text(
        lock.read_text().replace("PILLOW==", "pillow==9.0 ; python_version < '3.12'\nPILLOW==")
    )
    with pytest.raises(ValueError, match=r"once, without a marker\. Received: pillow: 9\.0 ;"):
        pins_from_lock(lock, PACKAGES)


def strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser`, and its subcommands' parsers, taking a flag only as spelled in full: argparse
    would otherwise take `--no-prog` for `--no-progress`, and a renamed flag could pass."""
    parser.allow_abbrev = False
    for action in parser._actions:  # argparse lists subcommands nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for subcommand in action.choices.values():
                strict(subcommand)
    return parser


@pytest.mark.parametrize("quick", [False, True])
def test_every_command_line_the_run_passes_parses(quick: bool, tmp_path: Path) -> None:
    """The flags the steps pass exist in this checkout's parsers (no --help read at run time)."""
    tuning = strict(build_parser())
    for argv in (
        study_argv("studies/smoke.toml"),
        study_argv("studies/mnist_cnn.toml", trials=1),
        export_argv("studies/mnist_cnn.toml", out=tmp_path / "model", epoch_scale=0.07),
    ):
        assert tuning.parse_args(argv).command == argv[0]
    assert strict(bench.backends.build_parser()).parse_args(
        backends_argv(["jax", "torch"], quick=quick)
    ).backends == ["jax", "torch"]
    assert strict(bench.workers.build_parser()).parse_args(
        workers_argv(quick=quick, seconds=45)
    ).counts == [1, 2, 4]


def test_a_step_out_of_time_is_stopped_with_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    with open(tmp_path / "step.log", "w") as log:
        ctx = Context(
            py=sys.executable, env=dict(os.environ), out=tmp_path, work=tmp_path, quick=True,
            study_smoke="", study_mnist="", export_scale=0.1, worker_seconds=1, log=log,
            deadline=time.monotonic() + 1,
        )  # fmt: skip
        began = time.monotonic()
        with pytest.raises(StepFailed) as failed:
            ctx.run(["bash", "-c", f"sleep 60 & echo $! > {pid_file}; wait"])
    assert failed.value.rc == TIMED_OUT and time.monotonic() - began < 10
    # SIGKILL is delivered at once, but a busy machine may take a moment to end the process.
    pid, gone_by = int(pid_file.read_text()), time.monotonic() + 5
    while still_sleeping(pid) and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not still_sleeping(pid)


def still_sleeping(pid: int) -> bool:
    """Whether process `pid` is the step's `sleep`, alive: not gone, not a zombie reaped late,
    and not another program that was given the same process id since (a busy machine)."""
    try:
        program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return program == b"sleep" and state != "Z"


def test_the_run_needs_only_the_standard_library() -> None:
    """`run` starts on the GPU image's Python, before keras, optuna or anything is installed."""
    check = (
        "import sys, tools.device_check.__main__, tools.device_check.run; "
        "stdlib = {*sys.stdlib_module_names, '__main__'}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} - stdlib))"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", check], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "['tools']"
