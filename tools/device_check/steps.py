"""The steps of the run, under `KERAS_BACKEND=jax`, each a function of its `Context`:

  a  what is there: GPU, Python, JAX devices, PyTorch CUDA, the project's imports (no TensorFlow)
  b  python -m bench.backends: the seed network's img/s under JAX and PyTorch, peak GPU memory
  c  the smoke study (studies/smoke.toml)
  d  the default study's seed trial (studies/mnist_cnn.toml --trials 1: trial 0) and its time
  e  an export of it (1 seed, 0.2 of its epochs) and its test accuracy
  f  python -m bench.workers: trials per hour with 1, 2 and 4 workers sharing the GPU

The command lines the steps pass to `tuning` and `bench` are built by the `*_argv` functions,
which tests/test_device_check.py parses with the real parsers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

BUDGET = 330  # seconds for all steps together, by default
INSTALL_TIMEOUT = 300
KILL_GRACE = 15  # seconds between SIGTERM and SIGKILL when a step runs out of time
TIMED_OUT = 124  # the return code of a step out of time, as timeout(1) gives


class StepFailed(Exception):
    """A command of a step failed (`rc`), or ran out of time (`TIMED_OUT`)."""

    def __init__(self, rc: int) -> None:
        super().__init__(f"rc {rc}")
        self.rc = rc


@dataclass
class Context:
    """What a step runs with: the venv's Python, its environment, its log and its deadline."""

    py: str
    env: dict[str, str]
    out: Path
    work: Path
    quick: bool
    study_smoke: str
    study_mnist: str
    export_scale: float
    worker_seconds: float
    log: TextIO
    deadline: float

    def say(self, message: str) -> None:
        self.log.write(message + "\n")
        self.log.flush()

    def metric(self, key: str, value: str) -> None:
        """A summary line: the last value of each key is shown."""
        self.say(f"{key}: {value}")
        with open(self.out / "metrics.tsv", "a") as metrics:
            metrics.write(f"{key}\t{value}\n")

    def run(self, argv: Sequence[str], *, cwd: Path | None = None, check: bool = True) -> int:
        """Run `argv` into the log, within the step's deadline (its whole process group is
        stopped when time is up); a failure raises `StepFailed` unless `check` is False."""
        self.log.flush()
        with subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd, env=self.env,
            start_new_session=True,
        ) as process:  # fmt: skip
            try:
                rc = process.wait(timeout=max(0.0, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop_group(process)
                raise StepFailed(TIMED_OUT) from None
        if check and rc != 0:
            raise StepFailed(rc)
        return rc

    def report(self, *args: str) -> None:
        """A summary line from the venv: `python -m tools.device_check report-...`."""
        self.run([self.py, "-m", "tools.device_check", *args])


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to `process` and everything it started, SIGKILL after `KILL_GRACE` seconds."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def study_argv(study: str, *, trials: int | None = None) -> list[str]:
    """`tuning study` as steps c and d run it."""
    return ["study", study, *(["--trials", str(trials)] if trials else []), "--no-progress"]


def export_argv(study: str, *, out: Path, epoch_scale: float) -> list[str]:
    """`tuning export` as step e runs it: one seed, no baseline, a share of the epochs."""
    return [
        "export", study, "--seeds", "1", "--no-baseline",
        "--epoch-scale", str(epoch_scale), "--out", str(out),
    ]  # fmt: skip


def backends_argv(backends: Sequence[str], *, quick: bool) -> list[str]:
    """`python -m bench.backends` as step b runs it."""
    sizes = ["--rounds", "1", "--images", "600", "--epochs", "2"] if quick else ["--rounds", "1"]
    return ["--backends", *backends, *sizes]


def workers_argv(*, quick: bool, seconds: float) -> list[str]:
    """`python -m bench.workers` as step f runs it."""
    if quick:
        return ["--counts", "1", "2", "4", "--seconds", "10", "--subset", "300"]
    return ["--counts", "1", "2", "4", "--seconds", f"{seconds:g}", "--subset", "4000"]


def step_env(ctx: Context) -> None:
    rc = 0
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi:
        query = [nvidia_smi, "--query-gpu=name,memory.total,driver_version"]
        rc |= ctx.run([*query, "--format=csv"], check=False)
        line = subprocess.run(
            [*query, "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        ).stdout
        ctx.metric("gpu", line.splitlines()[0] if line else "-")
    else:
        ctx.say("nvidia-smi: not found")
    rc |= ctx.run([ctx.py, "-VV"], check=False)
    jax = "import jax; print('jax', jax.__version__, jax.devices())"
    rc |= ctx.run([ctx.py, "-c", jax], check=False)
    torch = (
        "import torch; cuda = torch.cuda.is_available(); print('torch', torch.__version__, "
        "'cuda', cuda, torch.version.cuda, torch.cuda.get_device_name(0) if cuda else '')"
    )
    if ctx.run([ctx.py, "-c", torch], check=False) != 0:
        ctx.say("torch: not importable (step b measures JAX alone)")
    ctx.report("report-env")
    if rc:
        raise StepFailed(1)


def step_backends(ctx: Context) -> None:
    imports = {b: ctx.run([ctx.py, "-c", f"import {b}"], check=False) for b in ("jax", "torch")}
    backends = [backend for backend, rc in imports.items() if rc == 0]
    if not backends:
        ctx.say("neither jax nor torch imports")
        raise StepFailed(1)
    ctx.say(f"backends: {' '.join(backends)}")
    argv = backends_argv(backends, quick=ctx.quick)
    ctx.run([ctx.py, "-m", "bench.backends", *argv], cwd=bench_folder(ctx))
    ctx.report("report-backends", str(keep_bench_result(ctx, "backends")))


def step_smoke(ctx: Context) -> None:
    ctx.run([ctx.py, "-m", "tuning.cli", *study_argv(ctx.study_smoke)])
    ctx.report("report-study", "smoke")


def step_seed_trial(ctx: Context) -> None:
    ctx.run([ctx.py, "-m", "tuning.cli", *study_argv(ctx.study_mnist, trials=1)])
    ctx.report("report-study", "mnist_cnn")


def step_export(ctx: Context) -> None:
    out = ctx.out / "models" / "mnist_cnn"
    argv = export_argv(ctx.study_mnist, out=out, epoch_scale=ctx.export_scale)
    ctx.run([ctx.py, "-m", "tuning.cli", *argv])
    ctx.report("report-export", str(out / "model_card.json"))


def step_workers(ctx: Context) -> None:
    argv = workers_argv(quick=ctx.quick, seconds=ctx.worker_seconds)
    ctx.run([ctx.py, "-m", "bench.workers", *argv], cwd=bench_folder(ctx))
    ctx.report("report-workers", str(keep_bench_result(ctx, "workers")))


def bench_folder(ctx: Context) -> Path:
    """A scratch folder to run `bench` from: it writes storage/bench/ where it runs."""
    folder = ctx.work / "bench-cwd"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def keep_bench_result(ctx: Context, name: str) -> Path:
    """Copy a benchmark's .json and .md into $OUT/bench/; the .json's path there."""
    (ctx.out / "bench").mkdir(exist_ok=True)
    for suffix in (".json", ".md"):
        shutil.copy(bench_folder(ctx) / "storage" / "bench" / f"{name}{suffix}", ctx.out / "bench")
    return ctx.out / "bench" / f"{name}.json"


@dataclass(frozen=True)
class Step:
    """A step: its letter and name, its timeout (a real run, and QUICK), and the least time
    worth starting it with."""

    key: str
    label: str
    timeout: int
    least: int
    quick_timeout: int
    body: Callable[[Context], None]


STEPS = {
    step.key: step
    for step in (
        Step("a", "env", 90, 20, 120, step_env),
        Step("b", "backends", 180, 60, 300, step_backends),
        Step("c", "smoke", 180, 45, 400, step_smoke),
        Step("d", "seed-trial", 300, 100, 500, step_seed_trial),
        Step("e", "export", 200, 60, 300, step_export),
        Step("f", "workers", 300, 170, 300, step_workers),
    )
}
