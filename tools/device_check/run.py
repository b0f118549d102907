"""`run`, on the GPU machine: install the carried wheels offline, then the steps, each timed,
under its own timeout, within one budget; a summary at the end. Its output also goes to
$OUT/run.log, each step's to $OUT/<step>-<name>.log."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from tools.device_check import MNIST, PACK, ROOT, SCRIPT
from tools.device_check.install import install
from tools.device_check.steps import (
    BUDGET,
    STEPS,
    TIMED_OUT,
    Context,
    StepFailed,
)

Row = tuple[str, str, str, str]  # a line of steps.tsv: step, rc, seconds, note
SETTINGS = """Settings, from the environment:
  OUT             what comes back (default /tmp/device-check)
  STEPS           the steps to run (default "a b c d e f"; e.g. STEPS="f" runs what an earlier
                  call left out)
  QUICK=1         shrinks every step to seconds (tiny data): a rehearsal on a CPU
  BUDGET          seconds for all steps together (default 330; QUICK: 0, none): a step that no
                  longer fits is left out, and the summary says how to run it
  FRESH=1         ignore the study database an earlier call on the same machine left
  WORKER_SECONDS  step f's time per layout (default 45)
  WORK            scratch folder (default $TMPDIR/tuning-device-check)
  PYTHON          the image's interpreter (default: the first of python3, python, python3.12
                  that imports jax; read by tools/device_check.sh)"""


@dataclass(frozen=True)
class Settings:
    """A run's settings (see `SETTINGS`)."""

    out: Path
    work: Path
    steps: tuple[str, ...]
    quick: bool
    budget: float
    fresh: bool
    worker_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        quick = env.get("QUICK", "") not in ("", "0")
        scratch = Path(env.get("TMPDIR") or "/tmp") / "tuning-device-check"
        return cls(
            out=Path(env.get("OUT") or "/tmp/device-check"),
            work=Path(env.get("WORK") or scratch),
            steps=tuple((env.get("STEPS") or " ".join(STEPS)).split()),
            quick=quick,
            budget=float(env.get("BUDGET") or (0 if quick else BUDGET)),
            fresh=bool(env.get("FRESH")),
            worker_seconds=float(env.get("WORKER_SECONDS") or 45),
        )


class Say:
    """Lines to the terminal and to run.log."""

    def __init__(self, log: TextIO) -> None:
        self.log = log

    def __call__(self, message: str) -> None:
        print(message, flush=True)
        self.log.write(message + "\n")
        self.log.flush()


def run(settings: Settings) -> int:
    """Install, then the steps, then the summary; 0 if every step passed."""
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    settings.work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(out / "run.log", "a") as log:
        say = Say(log)
        sampler = gpu_sampler(out / "gpu.csv")
        try:
            rows, left = _run(settings, say, start=start)
        finally:
            if sampler is not None:
                sampler.terminate()
                sampler.wait()
        if sampler is not None:
            with open(out / "metrics.tsv", "a") as metrics:
                metrics.write(f"peak GPU memory (nvidia-smi, whole run)\t{peak_mib(out)} MiB\n")
        text = summary(settings, rows, out, left=left, seconds=time.monotonic() - start)
        (out / "summary.txt").write_text(text + "\n")
        say(text)
    return int(any(rc not in ("0", "-") for _, rc, _, _ in rows))


def _run(settings: Settings, say: Say, *, start: float) -> tuple[list[Row], list[str]]:
    out, work = settings.out, settings.work
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    say(
        f'== device check {stamp}: STEPS="{" ".join(settings.steps)}" '
        f"QUICK={int(settings.quick)} BUDGET={settings.budget:g} OUT={out}"
    )
    (out / "metrics.tsv").write_text("")
    say(f"== install: the wheels of {PACK.parent}, offline (log: {out / 'install.log'})")
    with open(out / "install.log", "w") as install_log:
        rc, py = install(work, install_log)
    rows: list[Row] = [("install", str(rc), f"{time.monotonic() - start:.1f}", py)]
    say(f"install: rc {rc}, {time.monotonic() - start:.1f} s, python {py}")
    if rc != 0 or not py:
        write_rows(out, rows)
        say("\n".join((out / "install.log").read_text().splitlines()[-30:]))
        say(f"device_check: install failed (see {out / 'install.log'})")
        raise SystemExit(1)
    template = step_inputs(settings, py, say)

    # The study database of an earlier call on this machine (OUT starts empty on every call),
    # so that e.g. STEPS="e" finds the study d made.
    state = work / ("state-quick" if settings.quick else "state")
    if settings.fresh:
        shutil.rmtree(state, ignore_errors=True)
    if not (out / "device.db").exists() and (state / "device.db").exists():
        say(f"== resuming the study database of an earlier call ({state})")
        copy_state(state, out)
    done, left = run_steps(settings, template, say)
    rows += done
    write_rows(out, rows)
    if (out / "device.db").exists():  # for the next call
        shutil.rmtree(state, ignore_errors=True)
        copy_state(out, state)
    return rows, left


def step_inputs(settings: Settings, py: str, say: Say) -> Context:
    """What every step runs with (its log and deadline still to set): the environment, and
    under QUICK the small data and studies."""
    out, work = settings.out, settings.work
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "KERAS_BACKEND": "jax",
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
        "TUNING_MNIST": str(ROOT / MNIST),
        "TUNING_STORAGE": f"sqlite:///{out / 'device.db'}",
        "TUNING_ARTIFACTS": str(out / "artifacts"),
    }
    smoke, mnist_cnn, scale = "studies/smoke.toml", "studies/mnist_cnn.toml", 0.2
    if settings.quick:  # 1,500 training and 500 test images, and the studies shrunk to them
        folder = work / "quick"
        folder.mkdir(exist_ok=True)
        argv = [py, "-m", "tools.device_check", "quick-inputs", env["TUNING_MNIST"], str(folder)]
        with open(out / "quick.log", "w") as quick_log:
            made = subprocess.run(argv, stdout=quick_log, stderr=subprocess.STDOUT, env=env)
        if made.returncode != 0:
            say((out / "quick.log").read_text() + "device_check: QUICK inputs failed")
            raise SystemExit(1)
        env["TUNING_MNIST"] = str(folder / "mnist.npz")
        smoke, mnist_cnn, scale = str(folder / "smoke.toml"), str(folder / "mnist_cnn.toml"), 0.07
    return Context(
        py=py, env=env, out=out, work=work, quick=settings.quick, study_smoke=smoke,
        study_mnist=mnist_cnn, export_scale=scale, worker_seconds=settings.worker_seconds,
        log=sys.stdout, deadline=0.0,
    )  # fmt: skip


def run_steps(settings: Settings, template: Context, say: Say) -> tuple[list[Row], list[str]]:
    """Each step in turn, within the budget: its row of steps.tsv, and the steps left out."""
    rows: list[Row] = []
    left: list[str] = []
    steps_start = time.monotonic()
    for key in settings.steps:
        step = STEPS.get(key)
        if step is None:
            say(f"unknown step '{key}' (a-f)")
            rows.append((key, "1", "-", "unknown step"))
            continue
        timeout = step.quick_timeout if settings.quick else step.timeout
        if settings.budget > 0:
            remaining = int(settings.budget - (time.monotonic() - steps_start))
            if remaining < step.least:
                say(f"== {key} {step.label}: left out, {remaining} s of the budget left")
                rows.append((key, "-", "-", "left out (budget)"))
                left.append(key)
                continue
            timeout = min(timeout, remaining)
        log_path = settings.out / f"{key}-{step.label}.log"
        say(f"== {key} {step.label} (timeout {timeout} s, log {log_path})")
        began = time.monotonic()
        with open(log_path, "w") as log:
            deadline = began + timeout
            rc = run_step(dataclasses.replace(template, log=log, deadline=deadline), step.body)
        seconds = f"{time.monotonic() - began:.1f}"
        note = f"timed out after {timeout} s" if rc == TIMED_OUT else ""
        rows.append((key, str(rc), seconds, note))
        say(f"{key} {step.label}: rc {rc}, {seconds} s" + (f" ({note})" if note else ""))
        if rc != 0:
            say("\n".join(f"    {line}" for line in log_path.read_text().splitlines()[-15:]))
    return rows, left


def run_step(ctx: Context, body: Callable[[Context], None]) -> int:
    """A step's return code: 0, a command's, `TIMED_OUT`, or 1 where the step itself broke."""
    try:
        body(ctx)
    except StepFailed as failure:
        return failure.rc
    except Exception:  # e.g. a benchmark that wrote no result: the traceback, in the step's log
        ctx.say(traceback.format_exc())
        return 1
    return 0


def gpu_sampler(path: Path) -> subprocess.Popen[bytes] | None:
    """GPU memory in use, once a second, all along (None without nvidia-smi)."""
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return None
    query = "--query-gpu=timestamp,memory.used,utilization.gpu"
    with open(path, "w") as csv:
        return subprocess.Popen(
            [nvidia_smi, query, "--format=csv,noheader,nounits", "-l", "1"],
            stdout=csv, stderr=subprocess.DEVNULL,
        )  # fmt: skip


def peak_mib(out: Path) -> int:
    """The most GPU memory in use at any sample of gpu.csv."""
    used = [line.split(",")[1].strip() for line in (out / "gpu.csv").read_text().splitlines()]
    return max((int(float(u)) for u in used if u.replace(".", "", 1).isdigit()), default=0)


def copy_state(source: Path, target: Path) -> None:
    """The study database (with its write-ahead log, where a step was stopped) and artifacts."""
    target.mkdir(parents=True, exist_ok=True)
    for database in source.glob("device.db*"):
        shutil.copy(database, target)
    if (source / "artifacts").is_dir():
        shutil.copytree(source / "artifacts", target / "artifacts", dirs_exist_ok=True)


def write_rows(out: Path, rows: list[Row]) -> None:
    lines = ["step\trc\tseconds\tnote", *("\t".join(row) for row in rows)]
    (out / "steps.tsv").write_text("\n".join(lines) + "\n")


def summary(
    settings: Settings,
    rows: list[Row],
    out: Path,
    *,
    left: list[str],
    seconds: float,
) -> str:
    """One line per step, the last value of each metric, and the call that runs what was left
    out."""
    quick = int(settings.quick)
    lines = ["", f"== summary (QUICK={quick}, KERAS_BACKEND=jax, {seconds:.1f} s in all)"]
    lines += [f"  {key:<8} rc {rc:<4} {secs:>8} s  {note}".rstrip() for key, rc, secs, note in rows]
    metrics: dict[str, str] = {}
    for line in (out / "metrics.tsv").read_text().splitlines():
        key, _, value = line.partition("\t")
        metrics[key] = value
    lines += [f"  {key}: {value}" for key, value in metrics.items()]
    if left:
        again = f'{"QUICK=1 " if settings.quick else ""}STEPS="{" ".join(left)}" bash {SCRIPT} run'
        lines.append(f"  left out for time: {' '.join(left)} -> next call: {again}")
    return "\n".join(lines)
