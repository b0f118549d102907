"""Plain test helpers: paths, tiny study files and networks, saved digit models, hand-made
trials, the smoke run's record. Fixtures and hooks live in conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from tests.live import Polls, Server

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.toml"
DEFAULT_STUDY = ROOT / "studies" / "mnist_cnn.toml"
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
# Two conv blocks, so transfer can unfreeze the dense layer and then the last block.
TINY_NET = {**SMALL_NET, "conv_blocks": 2, "filters_1": 16, "convs_1": 1}
# A transfer search space small enough for tests: 1-2 epochs, at most the dense layer unfrozen.
TINY_SPACE = [
    {"class": "Float", "name": "learning_rate", "min_value": 1e-2, "max_value": 3e-2,
     "sampling": "log", "default": 2e-2},
    {"class": "Int", "name": "epochs", "min_value": 1, "max_value": 2, "default": 2},
    {"class": "Float", "name": "augment", "min_value": 0.0, "max_value": 0.5, "step": 0.5,
     "default": 0.5},
    {"class": "Int", "name": "unfreeze", "min_value": 0, "max_value": 1, "default": 0},
]  # fmt: skip
HEAD_ONLY = {"learning_rate": 0.02, "epochs": 2, "augment": 0.5, "unfreeze": 0}
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


def letter_study(folder: Path) -> Path:
    """A study of the built-in CNN on an image folder of 3 letters, 6 images each."""
    from tests.letters import write_letters

    write_letters(folder / "letters", ["alpha", "beta", "gamma"], 6)
    return tiny_study(folder / "letters.toml", name="letters", source="letters")


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


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-separable 28x28 uint8 images: one bright bar per class at a class-specific place."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(y):
        row = 3 + 2 * label
        x[i, row : row + 3, 4:24] = 255
    order = rng.permutation(n)
    return x[order], y[order].astype(np.uint8)


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


def copy_base(base_dir: Path, tmp_path: Path) -> Path:
    """A copy of the saved digit model in `base_dir` (with its card), for a test that changes it."""
    folder = tmp_path / "base"
    shutil.copytree(base_dir, folder)
    return folder / "model.keras"


def draw_batches(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Two epochs of augmented batches of `x` (a fixed recipe and seed) under this process's
    Keras backend, concatenated: `images0`, `labels0`, `images1`, `labels1`."""
    from tuning.training.batches import make_dataset
    from tuning.training.recipe import Recipe

    recipe = Recipe(rotation=15, shift=0.1, zoom=0.1)
    batches = make_dataset(x, y, num_classes=10, batch_size=8, recipe=recipe, seed=5)
    epochs = []
    for _ in range(2):
        if hasattr(batches, "on_epoch_begin"):  # a PyDataset: Keras starts each epoch so
            batches.on_epoch_begin()
            epochs.append([batches[i] for i in range(len(batches))])
        else:  # a tf.data pipeline: each pass is an epoch
            epochs.append([(np.asarray(a), np.asarray(b)) for a, b in batches])
    return {
        f"{kind}{e}": np.concatenate([batch[k] for batch in epoch])
        for e, epoch in enumerate(epochs)
        for k, kind in enumerate(("images", "labels"))
    }


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


def copy_study(storage: str, folder: Path) -> str:
    """A copy of the SQLite database `storage` (say, the smoke run's) in `folder`, the
    write-ahead log too (unlike a file copy), for a test that writes to it; returns its URL."""
    with (
        sqlite3.connect(storage.removeprefix("sqlite:///")) as source,
        sqlite3.connect(folder / "studies.db") as target,
    ):
        source.backup(target)
    return f"sqlite:///{folder / 'studies.db'}"


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on `folder` with `options` (e.g. "size=32m", "ro,size=1m"), unmounted
    afterwards. Only root can mount: the test is skipped otherwise, saying so."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a size-limited filesystem (tmpfs); CI runs as root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def untrained_seed_study(root: Path, data: Path) -> str:
    """The smoke study in a new SQLite file under `root` (its URL), for the data file `data`:
    its seed network (trial 0) finished its rung without training, so it can be exported."""
    import keras

    from tuning.hp import OptunaHyperParameters
    from tuning.images.mnist import file_sha256
    from tuning.study.config import load_spec
    from tuning.study.create import open_study
    from tuning.study.rungs import rung_step

    storage = f"sqlite:///{root / 'studies.db'}"
    study, hypermodel = open_study(load_spec(SMOKE), storage=storage, data_sha256=file_sha256(data))
    trial = study.ask()
    hypermodel.build(OptunaHyperParameters(trial))
    trial.report(0.9, step=rung_step(0))
    study.tell(trial, 0.9)
    keras.backend.clear_session()
    return storage


def add_costed_trial(
    study: Any,
    scores: list[float],
    *,
    rungs: int,
    flops: int,
    limit: float | None = None,
    state: Any = None,
) -> Any:
    """A trial of a study of one or two directions (accuracy, then FLOPs) that finished a rung
    for each of `scores` (its `rungs` user attribute, and with one direction its reports), whose
    network costs `flops`, checked against a FLOPs `limit` if given, as the objective records
    both. COMPLETE if it reached all `rungs`, else PRUNED; `state` RUNNING leaves it running.
    Nothing is trained; returns the trial as stored."""
    from optuna.trial import TrialState

    from tuning.records import ModelCost, TrialKey
    from tuning.study.rungs import RungRecord, rung_step
    from tuning.study.trial_cost import apply_limits, record_cost

    study.enqueue_trial({"id": len(study.trials)})
    trial = study.ask()
    trial.suggest_int("id", 0, 10**6)  # a network of its own (export ranks distinct ones)
    cost = ModelCost(params=flops // 10, flops=flops)
    record_cost(trial, cost)
    if limit is not None and apply_limits(trial, cost, {"flops": limit}):
        trial.set_user_attr(TrialKey.INFEASIBLE, f"over the limit: flops {flops:,} > {limit:,}")
    records = [RungRecord(r, s, 0.0, [s], 1, 0.1).as_attr() for r, s in enumerate(scores)]
    trial.set_user_attr(TrialKey.RUNGS, records)
    multi = len(study.directions) > 1
    if not multi:
        for rung, score in enumerate(scores):
            trial.report(score, step=rung_step(rung))
    if state == TrialState.RUNNING:
        return study.trials[trial.number]
    if len(scores) == rungs:
        study.tell(trial, [scores[-1], flops] if multi else scores[-1])
    else:
        study.tell(trial, state=TrialState.PRUNED)
    return study.trials[trial.number]
