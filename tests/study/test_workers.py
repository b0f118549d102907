"""Several workers on one study: parallel processes, crashes, PostgreSQL, bad storage."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from tests.helpers import ROOT, postgres_url, tmpfs
from tuning.cli import main
from tuning.errors import StorageError
from tuning.storage import open_storage
from tuning.study.space import seed_params

STUDY = """
[study]
name = "{name}"
seed = 7

[fidelity]
subset = {subset}
folds = 2
max_epochs = 1

[search]
pruner = "none"
n_startup_trials = 2
"""


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "workers.toml"
    path.write_text(STUDY.format(name="workers", subset=1000))
    return path


@pytest.fixture
def small_study_file(tmp_path: Path) -> Path:
    """Trials of a blink (2 folds of 100 images): what is tested is how workers share a study."""
    path = tmp_path / "small.toml"
    path.write_text(STUDY.format(name="workers", subset=200))
    return path


def worker(study_file: Path, url: str, data: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tuning.cli", "worker", str(study_file), "--storage", url]
    cmd += ["--data", str(data), "--threads", "1", "--no-progress", *args]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def finish(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


def assert_exactly(url: str, name: str, count: int) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [t.number for t in trials] == list(range(count))
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == count  # no configuration was run twice
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
    return trials


def test_two_workers_share_one_sqlite_study_without_duplicates(
    small_study_file: Path, mnist_npz: Path, storage_url: str
) -> None:
    procs = [worker(small_study_file, storage_url, mnist_npz, "--trials", "2") for _ in range(2)]
    finish(*procs)
    assert_exactly(storage_url, "workers", 4)


def running_trial(url: str, study: str) -> int | None:
    """A RUNNING trial of `study` whose worker has sent at least one heartbeat (so it is
    mid-training)."""
    query = sqlalchemy.text(
        "SELECT t.number FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "JOIN studies s ON s.study_id = t.study_id WHERE t.state = 'RUNNING' AND s.study_name = :n"
    )
    engine = sqlalchemy.create_engine(url, connect_args=CONNECT.get(url.split(":")[0], {}))
    try:
        with engine.connect() as connection:
            row = connection.execute(query, {"n": study}).first()
    except sqlalchemy.exc.DBAPIError:
        return None  # the schema is not there yet
    finally:
        engine.dispose()
    return None if row is None else int(row[0])


CONNECT = {"sqlite": {"timeout": 10}}


# The fault suite kills workers on PostgreSQL in every run; SQLite (the same heartbeat) in the
# slow run, which keeps the suite inside its time.
@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.slow), "postgresql"])
def kill_study(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """(study file, storage URL, study name) on SQLite, or on CI's PostgreSQL server."""
    if request.param == "sqlite":
        url, name = f"sqlite:///{tmp_path / 'studies.db'}", "workers"
    else:
        url, name = postgres_url(), f"killed_{os.getpid()}_{time.time_ns()}"
    path = tmp_path / "kill.toml"
    path.write_text(STUDY.format(name=name, subset=1000))
    yield path, url, name
    if request.param == "postgresql":
        optuna.delete_study(study_name=name, storage=url)


@pytest.mark.faults
def test_a_killed_worker_leaves_no_running_trial_and_its_trial_is_retried(
    kill_study: tuple[Path, str, str],
    mnist_npz: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    study_file, url, name = kill_study
    beat = {"TUNING_HEARTBEAT_SECONDS": "1"}
    victim = worker(study_file, url, mnist_npz, "--trials", "5", **beat)
    deadline = time.monotonic() + 120
    while (killed := running_trial(url, name)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert killed is not None, "the worker never started a trial"
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    time.sleep(4)  # longer than the grace period of 3 heartbeats

    # The next worker (here, in this process) fails the dead trial and retries it.
    monkeypatch.setenv("TUNING_HEARTBEAT_SECONDS", "1")
    args = ["--storage", url, "--data", str(mnist_npz), "--trials", "1", "--no-progress"]
    assert main(["worker", str(study_file), *args]) == 0, capsys.readouterr().err
    study = optuna.load_study(study_name=name, storage=url)
    by_number = {t.number: t for t in study.trials}
    assert by_number[killed].state == TrialState.FAIL
    retries = [
        t
        for t in study.trials
        if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed
    ]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    # The retry runs the same configuration: every parameter the killed trial had drawn, and
    # here (trial 0 is the enqueued seed network) exactly the seed's parameters.
    assert retries[0].params.items() >= by_number[killed].params.items()
    assert killed == 0 and retries[0].params == seed_params(1)
    assert all(t.state != TrialState.RUNNING for t in study.trials)


@pytest.fixture
def pg_study_file(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    url = postgres_url()
    name = f"workers_{os.getpid()}_{int(time.time())}"
    path = tmp_path / "pg.toml"
    path.write_text(STUDY.format(name=name, subset=200))
    yield path, name
    optuna.delete_study(study_name=name, storage=url)


def test_two_workers_share_one_postgresql_study(
    pg_study_file: tuple[Path, str], mnist_npz: Path
) -> None:
    url = postgres_url()
    path, name = pg_study_file
    procs = [worker(path, url, mnist_npz, "--trials", "1") for _ in range(2)]
    finish(*procs)
    assert_exactly(url, name, 2)


def test_postgresql_with_wrong_credentials_says_so() -> None:
    url = postgres_url()
    bad = make_url(url).set(username="nobody_here", password="wrong")
    with pytest.raises(StorageError) as info:
        open_storage(bad.render_as_string(hide_password=False))
    assert "cannot open storage" in str(info.value) and "wrong" not in str(info.value)
    assert "\n" not in str(info.value)


def test_unreachable_database_host_is_one_line() -> None:
    with pytest.raises(StorageError) as info:
        open_storage("postgresql+psycopg://user:secret@127.0.0.1:1/db")
    message = str(info.value)
    assert message.startswith("cannot open storage 'postgresql+psycopg://user:***@127.0.0.1:1/db'")
    assert "secret" not in message and "\n" not in message


def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("my precious notes\n")
    with pytest.raises(StorageError, match="not an SQLite database \\(it was left untouched\\)"):
        open_storage(f"sqlite:///{notes}")
    assert notes.read_text() == "my precious notes\n"


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """A folder nobody can write to: chmod for a user; for root (who ignores modes), a
    read-only mount, as a read-only volume would be."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    with tmpfs(path, "ro,size=1m"):
        yield path


def test_a_read_only_storage_folder_is_refused(tmp_path: Path) -> None:
    with read_only_folder(tmp_path / "ro") as folder:
        with pytest.raises(StorageError) as info:
            open_storage(f"sqlite:///{folder / 'studies.db'}")
        message = str(info.value)
        assert message.startswith("cannot open storage") and "\n" not in message
        assert f"the database and its folder {folder} must be writable" in message


def test_a_study_name_reused_by_another_study_file_is_refused(
    study_file: Path,
    mnist_npz: Path,
    storage_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tuning.images.mnist import file_sha256
    from tuning.study.config import load_spec
    from tuning.study.create import open_study

    spec = load_spec(study_file)
    open_study(spec, storage=storage_url, data_sha256=file_sha256(mnist_npz))
    other = tmp_path / "other.toml"
    other.write_text(STUDY.format(name="workers", subset=2000))
    code = main(["worker", str(other), "--storage", storage_url, "--data", str(mnist_npz)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert f"(created from {study_file}) was made with rungs=[{{'subset': 1000," in err
    assert "but this run has rungs=[{'subset': 2000," in err
    assert f"give {other} a new [study] name" in err


def test_bad_thread_and_heartbeat_settings(
    study_file: Path,
    storage_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["worker", str(study_file), "--storage", storage_url, "--threads", "0"]) == 2
    assert "error: --threads: must be in 1.." in capsys.readouterr().err
    monkeypatch.setenv("TUNING_HEARTBEAT_SECONDS", "soon")
    with pytest.raises(StorageError, match="TUNING_HEARTBEAT_SECONDS must be a whole number"):
        open_storage(storage_url)


def test_a_run_picks_up_its_batch_from_the_process_before_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], study_file: Path
) -> None:
    from tuning.study.workers import ENV_BATCH, ProcessBatch

    monkeypatch.setenv("TUNING_TRIALS_PER_PROCESS", "4")
    first = ProcessBatch.begin(10)
    assert (first.done, first.size) == (0, 4)
    monkeypatch.setenv(ENV_BATCH, f"8,{first.start!r}")
    last = ProcessBatch.begin(10)
    assert (last.done, last.start, last.size) == (8, first.start, 2)  # the run's clock carries on
    assert ENV_BATCH not in os.environ  # not handed to processes this one starts
    monkeypatch.setenv(ENV_BATCH, "eight")
    assert main(["worker", str(study_file)]) == 2
    assert "TUNING_BATCH is set by tuning itself" in capsys.readouterr().err
