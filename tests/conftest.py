"""Shared fixtures: tiny MNIST slices, temporary storage, the smoke study file, small saved
digit models, and the one smoke study run by `tuning study` that the command-line, dashboard and
export tests share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from tests.live import Polls, Server

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` runs N test processes: one TensorFlow thread pool each (and in the commands
    # they start) keeps them from fighting over the cores.
    cores = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(cores))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
# A one-block CNN that trains in seconds: what tests save as an "exported" digit model.
SMALL_NET = {
    "conv_blocks": 1,
    "kernel_size": 3,
    "batch_norm": False,
    "filters_0": 16,
    "convs_0": 1,
    "dense_units": 64,
    "dropout": 0.0,
    "optimizer": "adam",
    "learning_rate": 3e-3,
    "batch_size": 64,
    "epochs": 1,
}
SMOKE = ROOT / "studies" / "smoke.toml"
# A study file for a few seconds of training on any data: 2 folds, 1 epoch, one rung.
TINY_STUDY = """
[study]
name = "{name}"
seed = 3

[data]
source = "{source}"
{data}
{space}
[fidelity]
folds = 2
max_epochs = 1

[search]
pruner = "none"
n_startup_trials = 1

[budget]
trials = {trials}
"""


def tiny_study(
    path: Path, *, name: str, source: str, data: str = "", space: str = "", trials: int = 1
) -> Path:
    """Write a `TINY_STUDY` file to `path` (`data`, `space`: extra TOML lines for those tables)."""
    path.write_text(
        TINY_STUDY.format(name=name, source=source, data=data, space=space, trials=trials)
    )
    return path


DEFAULT_STUDY = ROOT / "studies" / "mnist_cnn.toml"


def postgres_url() -> str:
    """The PostgreSQL server of `TUNING_TEST_POSTGRES`. Without the variable the test is skipped;
    with it (CI sets it) a server that does not answer fails the test: a dead service is red."""
    from tuning.errors import StorageError
    from tuning.storage import open_storage

    url = os.environ.get("TUNING_TEST_POSTGRES")
    if not url:
        pytest.skip("no PostgreSQL server: set TUNING_TEST_POSTGRES (.ci/run starts one)")
    try:
        open_storage(url)
    except StorageError as exc:
        pytest.fail(f"TUNING_TEST_POSTGRES is set but its server does not answer: {exc}")
    return url


def ctrl_c_works() -> None:
    """`preexec_fn` for a child the test will Ctrl-C: restore SIGINT's default handling, which a
    test run started as a background job (`make test &`, no job control) passes on as ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-separable 28x28 uint8 images: one bright bar per class at a class-specific place."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(y):
        row = 3 + 2 * label
        x[i, row : row + 3, 4:24] = 255
    order = rng.permutation(n)
    return x[order], y[order].astype(np.uint8)


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
        x_train, y_train = _synthetic_digits(2000, seed=0)
        x_test, y_test = _synthetic_digits(500, seed=1)
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


def save_digit_model(
    mnist_npz: Path, folder: Path, params: dict[str, Any], *, epochs: int, **card: Any
) -> Path:
    """Train configuration `params` on the digits of `mnist_npz` and save it in `folder` as an
    export would: `model.keras` and a card with class names, the model's sha256 and `card`."""
    import keras
    import optuna

    from tuning.hp import OptunaHyperParameters
    from tuning.images.mnist import file_sha256
    from tuning.memory import release_memory
    from tuning.model.card import CARD_FILE
    from tuning.study.space import CNNHyperModel, seed_params

    with np.load(mnist_npz) as data:
        x, y = data["x_train"], data["y_train"]
    keras.utils.set_random_seed(0)
    hypermodel = CNNHyperModel(max_epochs=max(epochs, int(params.get("epochs", 1))))
    values = {**seed_params(epochs), **params, "epochs": epochs}  # the seed's for what is unsaid
    hp = OptunaHyperParameters(optuna.trial.FixedTrial(values))  # type: ignore[arg-type]
    model = hypermodel.build(hp)
    hypermodel.fit(hp, model, x[..., None], y, seed=0)
    model.save(folder / "model.keras")
    release_memory()
    card = {
        "class_names": [str(d) for d in range(10)],
        "sha256": {"model": file_sha256(folder / "model.keras")},
        **card,
    }
    (folder / CARD_FILE).write_text(json.dumps(card))
    return folder


def add_rung_trial(study: Any, scores: list[float], *, rungs: int) -> None:
    """A trial that reported `scores` rung by rung (at the objective's steps): COMPLETE with the
    last score if it reached all `rungs`, else PRUNED. Nothing is trained."""
    from optuna.trial import TrialState

    from tuning.study.rungs import rung_step

    trial = study.ask()
    for rung, score in enumerate(scores):
        trial.report(score, step=rung_step(rung))
    if len(scores) == rungs:
        study.tell(trial, scores[-1])
    else:
        study.tell(trial, state=TrialState.PRUNED)


@dataclass(frozen=True)
class SmokeRun:
    """`tuning study` on the smoke study (3 trials), run once per test session as a user runs it:
    a progress bar on the terminal, TensorFlow at its most talkative (`TF_CPP_MIN_LOG_LEVEL=0`),
    two trials per process (so the run re-executes itself once), while `tuning dashboard`
    serves the same database and its API is polled. The dashboard keeps serving the finished
    study until the session ends."""

    folder: Path
    storage: str
    data: Path
    artifacts: Path
    tmp: Path  # the run's TMPDIR, where a library log would go
    result: subprocess.CompletedProcess[str]
    server: Server
    polls: Polls


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


def copy_study(storage: str, folder: Path) -> str:
    """A copy of the SQLite database `storage` (say, the smoke run's) in `folder`, the
    write-ahead log too (unlike a file copy), for a test that writes to it; returns its URL."""
    import sqlite3

    with (
        sqlite3.connect(storage.removeprefix("sqlite:///")) as source,
        sqlite3.connect(folder / "studies.db") as target,
    ):
        source.backup(target)
    return f"sqlite:///{folder / 'studies.db'}"


# The test files that share the session's smoke run. Under `pytest -n N` (see pyproject.toml)
# each file's tests run on one worker, so a module's fixtures are made once; these files share
# one worker, so the smoke study and its export run once.
_SMOKE_RUN_FILES = ("tests/test_cli.py", "tests/test_dashboard.py", "tests/export/test_pipeline.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's scheduling by module, with the smoke run's files as one module."""
    from xdist.scheduler import LoadScopeScheduling

    class SmokeRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return "smoke_run" if path in _SMOKE_RUN_FILES else path

    return SmokeRunScheduling(config, log)
