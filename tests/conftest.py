"""Shared fixtures and hooks: a tiny MNIST slice, temporary storage, an isolated environment,
the one smoke study run by `tuning study` that the command-line, dashboard and export tests
share, long-lived objects kept out of the garbage collector's way, and the scheduling that
keeps each file on one test process. Plain helpers are in tests/helpers.py."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import ROOT, SMOKE, SmokeRun, synthetic_digits

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` runs N test processes: one TensorFlow thread pool each (and in the commands
    # they start) keeps them from fighting over the cores.
    cores = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(cores))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


@pytest.fixture(scope="session")
def mnist_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Keras-layout mnist.npz: 2,000 train / 500 test images.

    Sliced from $TUNING_MNIST when it is set (as in CI); generated otherwise.
    """
    out = tmp_path_factory.mktemp("data") / "mnist_slice.npz"
    source = os.environ.get("TUNING_MNIST")
    if source and Path(source).is_file():
        with np.load(source) as full:
            arrays = {
                "x_train": full["x_train"][:2000],
                "y_train": full["y_train"][:2000],
                "x_test": full["x_test"][:500],
                "y_test": full["y_test"][:500],
            }
    else:
        x_train, y_train = synthetic_digits(2000, seed=0)
        x_test, y_test = synthetic_digits(500, seed=1)
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    np.savez_compressed(out, **arrays)
    return out


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture(scope="session", autouse=True)
def _isolated_session_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module-scoped fixtures start before the per-test environment below: keep them out of the
    project's storage/ (and the user's JAX cache) too."""
    patch = pytest.MonkeyPatch()
    patch.delenv("TUNING_STORAGE", raising=False)
    patch.setenv("TUNING_ARTIFACTS", str(tmp_path_factory.mktemp("artifacts")))
    # JAX's compilations (tests/test_backends.py): shared by the session, not the user's cache.
    patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax-cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never write to the project's storage/ and never read a developer's settings."""
    monkeypatch.delenv("TUNING_STORAGE", raising=False)
    monkeypatch.setenv("TUNING_ARTIFACTS", str(tmp_path / "artifacts"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """What `tuning.memory.freeze_long_lived_objects` does once for a study's process, done for
    the test process before each test and its fixtures: what is alive now (the libraries' half
    a million objects, the session's and module's fixtures) is moved out of the collector's
    reach. Every `release_memory()` makes a full collection, which would scan it all (0.27 s
    each, a third of the CPU time of tests/transfer/test_run.py). Cyclic garbage made of frozen
    objects is never collected: a module fixture's network may outlive its module."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path) -> Iterator[SmokeRun]:
    """The dashboard starts first, on a database that does not exist yet, so it also sees the
    study being created."""
    from tests.live import dashboard, polling

    folder = tmp_path_factory.mktemp("smoke_run")
    storage = f"sqlite:///{folder / 'studies.db'}"
    tmp = folder / "tmp"
    tmp.mkdir()
    env = {
        **os.environ,
        "TUNING_TRIALS_PER_PROCESS": "2",
        "TF_CPP_MIN_LOG_LEVEL": "0",
        "TMPDIR": str(tmp),
        # The trials' curves go where the dashboard looks for artifacts.
        "TUNING_ARTIFACTS": str(folder / "artifacts"),
    }
    argv = [sys.executable, "-m", "tuning.cli", "study", str(SMOKE)]
    argv += ["--storage", storage, "--data", str(mnist_npz)]
    with dashboard(folder, storage) as server:
        with polling(server.url) as polls:
            result = subprocess.run(
                argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env=env
            )
        yield SmokeRun(folder, storage, mnist_npz, folder / "artifacts", tmp, result, server, polls)


# The test files that share the session's smoke run. Under `pytest -n N` (see pyproject.toml)
# each file's tests run on one worker, so a module's fixtures are made once; these files share
# one worker, so the smoke study and its export run once.
_SMOKE_RUN_FILES = ("tests/test_cli.py", "tests/test_dashboard.py", "tests/export/test_pipeline.py")
# The costliest groups (over 30 s of CPU each, 2-core AMD EPYC, Dec 2026), costliest first.
# They are handed out before the rest: xdist would hand out groups with more tests first and
# could start one of these last, while the other worker idles. Together they are about two
# thirds of the suite's work.
_COSTLIEST_FIRST = (
    "smoke_run",
    "tests/test_bench.py",
    "tests/test_backends.py",
    "tests/test_console.py",
    "tests/study/test_workers.py",
    "tests/study/test_run.py",
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's scheduling by module, with the smoke run's files as one module and the
    costliest modules first."""
    from xdist.scheduler import LoadScopeScheduling

    class SmokeRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return "smoke_run" if path in _SMOKE_RUN_FILES else path

        def _assign_work_unit(self, node: Any) -> None:
            costliest = next((s for s in _COSTLIEST_FIRST if s in self.workqueue), None)
            if costliest is not None:
                self.workqueue.move_to_end(costliest, last=False)
            super()._assign_work_unit(node)

    return SmokeRunScheduling(config, log)
