"""Storage calls outlive their database: a pause while it is away, one line when it is gone for
good or refuses for a reason no retry cures. Driven with ask()/tell(), nothing trained."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from tests.helpers import postgres_url
from tests.pg_server import PrivateServer
from tuning.errors import DatabaseLostError, StorageError
from tuning.reconnect import Reconnect
from tuning.storage import open_storage

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    postgres_url()  # CI's server: without it (no TUNING_TEST_POSTGRES) these are skipped
    own = PrivateServer()
    own.start()
    yield own
    own.remove()


def _study(url: str, said: list[str], seconds: float = 60) -> optuna.Study:
    storage = open_storage(url, reconnect=Reconnect(seconds=seconds, say=said.append))
    return optuna.create_study(storage=storage, study_name=f"s{time.time_ns()}")


def test_a_call_during_a_restart_waits_and_is_recorded_once(server: PrivateServer) -> None:
    said: list[str] = []
    study = _study(server.url, said)
    trial = study.ask()
    server.stop()
    threading.Timer(1.5, server.start).start()  # back while tell() waits
    study.tell(trial, 0.5)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert study.trials[0].value == 0.5
    assert said[0].startswith(f"lost the database at {server.url} (")
    assert said[0].endswith("; retrying for up to 1 min")
    assert said[1].startswith(f"the database at {server.url} is back after ")
    assert len(said) == 2


def test_a_database_gone_for_good_gives_up_in_one_line_then_fails_at_once(
    server: PrivateServer,
) -> None:
    said: list[str] = []
    study = _study(server.url, said, seconds=1.0)
    trial = study.ask()
    server.stop()
    try:
        with pytest.raises(DatabaseLostError) as info:
            study.tell(trial, 0.5)
        message = str(info.value)
        assert message.startswith(f"lost the database at {server.url} for 0.0166667 min; gave up")
        assert "\n" not in message and "Start the worker again" in message
        began = time.monotonic()
        with pytest.raises(DatabaseLostError):
            study.trials  # noqa: B018  (no second wait of the whole limit)
        assert time.monotonic() - began < 0.5
    finally:
        server.start()
    # Nothing was recorded twice, and the trial waits for the heartbeat to fail it.
    trials = optuna.load_study(study_name=study.study_name, storage=server.url).trials
    assert [t.state for t in trials] == [TrialState.RUNNING]


def test_a_database_that_refuses_for_good_ends_the_call_in_one_line(
    server: PrivateServer,
) -> None:
    admin = sqlalchemy.create_engine(server.url, isolation_level="AUTOCOMMIT")
    name = f"dropped_{time.time_ns()}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    url = server.url.rsplit("/", 1)[0] + f"/{name}"
    said: list[str] = []
    study = _study(url, said)
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()
    began = time.monotonic()
    with pytest.raises(StorageError) as info:
        study.ask()
    assert time.monotonic() - began < 10  # refused, not waited for
    message = str(info.value)
    assert message.startswith(f"the database at {url} failed: ")
    assert f'database "{name}" does not exist' in message and "\n" not in message
    assert said == []


def test_sqlite_locked_by_another_process_waits_then_writes(tmp_path: Path) -> None:
    db = tmp_path / "studies.db"
    study = _study(f"sqlite:///{db}", [])
    trial = study.ask()
    locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")  # as another program holding the write lock would
    threading.Timer(2.0, locker.rollback).start()
    began = time.monotonic()
    study.tell(trial, 0.25)
    assert time.monotonic() - began >= 1.5  # it waited for the lock ...
    assert study.trials[0].value == 0.25  # ... and then wrote
    locker.close()


def test_after_an_outage_no_trial_is_judged_stale_until_its_worker_could_beat_again(
    server: PrivateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNING_HEARTBEAT_SECONDS", "1")  # stale after a grace of 3 s
    storage = open_storage(server.url)
    study = optuna.create_study(storage=storage, study_name=f"s{time.time_ns()}")
    other = study.ask()  # another worker's trial, mid-training: it has beaten
    storage.record_heartbeat(other._trial_id)
    server.stop()
    threading.Timer(4.0, server.start).start()  # down longer than the grace period
    assert len(study.trials) == 1  # this worker waits the outage out
    # Nobody could beat while the database was away: the other worker gets a grace period.
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == TrialState.RUNNING
    time.sleep(3.5)  # it did not beat again within it: stale now
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == TrialState.FAIL
