"""Trial claims in a shared study database: each trial is run by exactly one worker."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from tests.helpers import postgres_url
from tuning.storage import open_storage

WORKERS = 4
ASKS = 10


def _ask_many(url: str, name: str, barrier: Any, out: Any) -> None:
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    barrier.wait()
    out.put([study.ask().number for _ in range(ASKS)])


@pytest.fixture(params=["sqlite", "postgresql"])
def shared(request: pytest.FixtureRequest, storage_url: str) -> Iterator[tuple[str, str]]:
    """(URL, study name) of a fresh study database of each kind workers share."""
    if request.param == "sqlite":
        yield storage_url, "claims"
        return
    url, name = postgres_url(), f"claims_{os.getpid()}_{time.time_ns()}"
    yield url, name
    optuna.delete_study(study_name=name, storage=url)


def test_concurrent_workers_never_claim_the_same_waiting_trial(shared: tuple[str, str]) -> None:
    # Enqueued trials (the seed network, retried trials) are claimed by a read then a write;
    # on SQLite without an atomic claim, 4 processes asking 40 times got only 26-30 trials.
    url, name = shared
    study = optuna.create_study(study_name=name, storage=open_storage(url))
    for i in range(WORKERS * ASKS):
        study.enqueue_trial({"x": float(i)})
    ctx = multiprocessing.get_context("spawn")  # the test process may hold TensorFlow threads
    barrier, out = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_ask_many, args=(url, name, barrier, out)) for _ in range(WORKERS)]
    for proc in procs:
        proc.start()
    claimed = sorted(n for _ in procs for n in out.get(timeout=120))
    for proc in procs:
        proc.join(timeout=60)
    assert claimed == list(range(WORKERS * ASKS))  # every enqueued trial once, none twice
    states = {t.state for t in optuna.load_study(study_name=name, storage=url).trials}
    assert states == {TrialState.RUNNING}


def test_a_trial_is_claimed_once_and_its_start_is_recorded(storage_url: str) -> None:
    first, second = open_storage(storage_url), open_storage(storage_url)
    study = optuna.create_study(study_name="claims", storage=first)
    study.enqueue_trial({"x": 1.0})
    trial_id = study.trials[0]._trial_id
    assert first.set_trial_state_values(trial_id, state=TrialState.RUNNING) is True
    assert second.set_trial_state_values(trial_id, state=TrialState.RUNNING) is False
    assert second.get_trial(trial_id).datetime_start is not None


def test_a_stale_trial_is_failed_by_one_worker_only(storage_url: str) -> None:
    # Each worker fails stale trials before starting its own; only the one that failed it may
    # retry it, or the same configuration would be retried twice.
    first, second = open_storage(storage_url), open_storage(storage_url)
    study = optuna.create_study(study_name="claims", storage=first)
    trial_id = study.ask()._trial_id
    assert first.set_trial_state_values(trial_id, state=TrialState.FAIL) is True
    with pytest.raises(UpdateFinishedTrialError):
        second.set_trial_state_values(trial_id, state=TrialState.FAIL)
    failed = second.get_trial(trial_id)
    assert failed.state == TrialState.FAIL and failed.datetime_complete is not None


def test_completing_a_trial_still_stores_its_value(storage_url: str) -> None:
    study = optuna.create_study(study_name="claims", storage=open_storage(storage_url))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert study.best_value == min(t.params["x"] for t in study.trials)


def test_opening_a_database_again_keeps_its_writes_safe_from_other_readers(
    storage_url: str,
) -> None:
    """`tuning export` opens the study's database more than once; meanwhile the dashboard or
    `sqlite3` may read it from another process. No write of this process may be lost."""
    study = optuna.create_study(study_name="s", storage=open_storage(storage_url))
    study.set_user_attr("before", 1)
    again = optuna.load_study(study_name="s", storage=open_storage(storage_url))
    path = storage_url.removeprefix("sqlite:///")
    reader = (
        f"import sqlite3; sqlite3.connect({path!r}).execute('select * from studies').fetchall()"
    )
    subprocess.run([sys.executable, "-c", reader], check=True, timeout=60)
    again.set_user_attr("after", 2)
    study.set_user_attr("last", 3)
    check = (
        f"import optuna; print(sorted(optuna.load_study(study_name='s', storage={storage_url!r})"
        ".user_attrs.items()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], check=True, timeout=120, capture_output=True, text=True
    )
    assert out.stdout.strip() == "[('after', 2), ('before', 1), ('last', 3)]"
