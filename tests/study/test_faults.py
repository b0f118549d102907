"""The fault suite's study cases: workers outlive a PostgreSQL server that restarts under them."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tests.helpers import postgres_url
from tests.pg_server import PrivateServer
from tests.study.test_workers import STUDY, worker
from tuning.cli import main

pytestmark = pytest.mark.faults

RESTARTS = 3
DOWN_SECONDS = 1.0  # long enough that calls in flight fail, as in a failover


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    postgres_url()  # CI's server: without it (no TUNING_TEST_POSTGRES) the case is skipped
    own = PrivateServer()
    own.start()
    yield own
    own.remove()


def _count(url: str, state: str) -> int:
    engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as connection:
            query = "SELECT count(*) FROM trials WHERE state = :state"
            return int(connection.execute(sqlalchemy.text(query), {"state": state}).scalar_one())
    except sqlalchemy.exc.DBAPIError:
        return -1  # no schema yet, or the server is down
    finally:
        engine.dispose()


def _at_least(url: str, state: str, count: int) -> Callable[[], bool]:
    return lambda: _count(url, state) >= count


def _wait_for(
    condition: Callable[[], bool], procs: list[subprocess.Popen[str]], timeout: float
) -> None:
    """Until `condition()` holds; fails the test after `timeout`, or at once if a worker died."""
    began = time.monotonic()
    while not condition():
        dead = [proc for proc in procs if proc.poll() not in (None, 0)]
        assert not dead, f"a worker died: {dead[0].communicate()[1]}"
        assert time.monotonic() - began < timeout, "timed out"
        time.sleep(0.1)


@pytest.mark.parametrize(
    "each", [3, pytest.param(4, marks=pytest.mark.slow)], ids=["6-trials", "8-trials"]
)
def test_two_workers_outlive_three_restarts_of_postgresql(
    server: PrivateServer, tmp_path: Path, mnist_npz: Path, each: int
) -> None:
    study_file = tmp_path / "restarts.toml"
    study_file.write_text(STUDY.format(name="restarts", subset=200))
    procs = [worker(study_file, server.url, mnist_npz, "--trials", str(each)) for _ in range(2)]
    pauses = []
    try:
        # Both workers at work first: one that cannot reach the database when it starts is
        # refused at once (a wrong URL should not wait ten minutes).
        _wait_for(_at_least(server.url, "RUNNING", 2), procs, timeout=180)
        for _ in range(RESTARTS):
            # Mid-trial: a trial is running.
            _wait_for(_at_least(server.url, "RUNNING", 1), procs, timeout=180)
            done = _count(server.url, "COMPLETE")
            began = time.monotonic()
            server.restart(down=DOWN_SECONDS)
            _wait_for(_at_least(server.url, "COMPLETE", done + 1), procs, timeout=120)
            pauses.append(time.monotonic() - began)
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:  # the test failed: show what the workers said
                proc.kill()
                print(proc.communicate()[1])
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err  # no worker died
    said = "".join(err for _, err in outputs)
    assert "lost the database at postgresql+psycopg://tuning@127.0.0.1" in said, said
    assert "retrying for up to 10 min" in said and "is back after" in said, said

    trials = optuna.load_study(study_name="restarts", storage=server.url).trials
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states  # none stuck
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2 * each, states  # none lost: each worker finished its trials
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == len(params)  # none counted twice
    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials}
    for failed in (t for t in trials if t.state == TrialState.FAIL):
        assert failed.number in retried, f"trial {failed.number} failed and was not retried"
    backs = [line.rsplit(" ", 2)[1] for line in said.splitlines() if "is back after" in line]
    lengths = sorted(t.duration.total_seconds() for t in complete if t.duration)
    print(f"pause from each restart to the next committed trial: {pauses}; "
          f"outages the workers waited through (s): {backs}; "
          f"trial lengths (s): {lengths}")  # fmt: skip


def test_a_worker_that_gives_up_on_the_database_says_so_in_one_line(
    server: PrivateServer, tmp_path: Path, mnist_npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study_file = tmp_path / "gone.toml"
    study_file.write_text(STUDY.format(name="gone", subset=1000))

    def stop_mid_trial() -> None:
        while _count(server.url, "RUNNING") < 1:
            time.sleep(0.05)
        server.stop()  # for good

    threading.Thread(target=stop_mid_trial, daemon=True).start()
    args = ["--storage", server.url, "--data", str(mnist_npz), "--trials", "2", "--no-progress"]
    assert main(["worker", str(study_file), *args, "--retry-minutes", "0.02"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: lost the database at {server.url} for 0.02 min; gave up. Start the worker again "
        "once the database is back: the trial it was running is failed and retried by the next "
        "worker"
    ], err
    server.start()
    trials = optuna.load_study(study_name="gone", storage=server.url).trials
    assert [t.state for t in trials] == [TrialState.RUNNING]  # for the heartbeat to fail, retry
