"""Storage URL -> Optuna storage, with the settings that keep long studies safe."""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb.models import TrialModel
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from tuning.errors import StorageError
from tuning.reconnect import Reconnect, Reconnecting

ENV_STORAGE = "TUNING_STORAGE"
ENV_HEARTBEAT = "TUNING_HEARTBEAT_SECONDS"
DEFAULT_STORAGE = "sqlite:///storage/studies.db"
SUPPORTED = ("sqlite", "postgresql", "postgresql+psycopg")
# A worker beats every HEARTBEAT seconds; a trial whose worker was silent for GRACE_FACTOR beats
# is failed by the next worker to start a trial, and retried once with the same parameters.
HEARTBEAT_SECONDS = 20
GRACE_FACTOR = 3
SQLITE_BUSY_TIMEOUT_SECONDS = 60
_SQLITE_MAGIC = b"SQLite format 3\x00"


def resolve_storage_url(url: str | None = None) -> str:
    """`url` wins over `TUNING_STORAGE`, which wins over the project default."""
    return url or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def heartbeat_seconds() -> int:
    """The heartbeat interval: `TUNING_HEARTBEAT_SECONDS`, else 20."""
    raw = os.environ.get(ENV_HEARTBEAT, str(HEARTBEAT_SECONDS))
    if not raw.isdigit() or int(raw) < 1:
        raise StorageError(
            f"{ENV_HEARTBEAT} must be a whole number of seconds >= 1. Received: {raw!r}"
        )
    return int(raw)


# SQLite files this process has opened. Reading one again with open() would be a bug: closing
# any descriptor of a file drops every POSIX lock the process holds on it, SQLite's included.
# Another process (the dashboard, `sqlite3`) could then take itself for the last reader, checkpoint
# and delete the write-ahead log under this process, and its later writes would be lost.
_OPENED_SQLITE: set[Path] = set()


def _check_sqlite_path(path: Path) -> None:
    """Refuse, before SQLAlchemy touches it, a file that is not SQLite or a folder we cannot use."""
    if path.resolve() in _OPENED_SQLITE:
        return  # checked before this process's first connection; reading it now drops locks
    if path.is_dir():
        raise StorageError(f"{path}: is a folder; expected an SQLite database file")
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as handle:
            if handle.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                raise StorageError(
                    f"{path}: not an SQLite database (it was left untouched); point the storage "
                    "URL or TUNING_STORAGE at a study database or a new file",
                    param="storage",
                )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"{path.parent}: cannot create the storage folder ({exc.strerror})"
        ) from None


def _reason(exc: BaseException, url: str) -> str:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    if "unable to open database file" in reason or "readonly database" in reason:
        folder = Path(make_url(url).database or ".").parent
        reason += f" (the database and its folder {folder} must be writable)"
    return reason


class ClaimSafeRDBStorage(RDBStorage):
    """RDBStorage whose trial claims are one atomic compare-and-swap, on SQLite too.

    Optuna claims a WAITING trial (the enqueued seed, a retried trial) by reading it
    `FOR UPDATE` and then writing RUNNING. SQLite ignores `FOR UPDATE` and pysqlite reads
    outside any transaction, so two workers could both claim one trial and train it twice;
    likewise two workers could both fail one stale trial and retry it twice. Here the claim is
    `UPDATE ... WHERE state = expected`, which exactly one writer can win on any database.
    """

    _EXPECTED: ClassVar[dict[TrialState, TrialState]] = {
        TrialState.RUNNING: TrialState.WAITING,
        TrialState.FAIL: TrialState.RUNNING,
    }

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        expected = self._EXPECTED.get(state)
        if expected is None or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # stored as naive UTC
        running = state == TrialState.RUNNING
        stamp = TrialModel._datetime_start_utc if running else TrialModel._datetime_complete_utc
        claim = (
            sqlalchemy.update(TrialModel)
            .where(TrialModel.trial_id == trial_id, TrialModel.state == expected)
            .values({TrialModel.state: state, stamp: now})
        )
        with self.engine.begin() as connection:
            won = connection.execute(claim).rowcount == 1
        if not won:
            # Lost the race, or the trial was never in the expected state: same answers as
            # Optuna's own implementation (False, or UpdateFinishedTrialError once finished).
            self.check_trial_is_updatable(trial_id, self.get_trial(trial_id).state)
        return won


class WorkerStorage(Reconnecting, ClaimSafeRDBStorage):
    """The storage every command opens: atomic claims, calls that ride out a lost database, and
    a best trial within the study's limits."""

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        """The best COMPLETE trial among those that meet every Optuna constraint (the study
        file's `[objective] limits`), if any does. `Study.best_trial` skips infeasible trials by
        itself, but optuna-dashboard 0.21 shows this method's answer as the "Best Trial": the
        seed network, scored over a limit as the yardstick, would be shown as the best."""
        best = super().get_best_trial(study_id)
        if all(v <= 0 for v in best.constraints.values()):
            return best
        trials = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        feasible = [t for t in trials if all(v <= 0 for v in t.constraints.values())]
        if not feasible:
            return best
        sign = 1 if self.get_study_directions(study_id)[0] == StudyDirection.MAXIMIZE else -1
        return max(feasible, key=lambda t: (sign * t.values[0], -t.number))


def _create_rdb_storage(url: str, engine_kwargs: dict[str, object], beat: int) -> WorkerStorage:
    # Workers started together race to create the schema in a new database; the loser's insert
    # of the schema version fails. The schema exists by then, so a second attempt just opens it.
    for attempt in range(3):
        try:
            return WorkerStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=beat,
                grace_period=beat * GRACE_FACTOR,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as exc:
            racing = isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(exc)
            if not racing or attempt == 2:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_storage(url: str | None = None, *, reconnect: Reconnect | None = None) -> RDBStorage:
    """Open (creating if needed) the study database behind a URL.

    SQLite runs in WAL mode with a long busy timeout, so the dashboard and several worker
    processes can share one file; PostgreSQL serves workers on many machines. Once open, a call
    that loses the database waits for it as `reconnect` says (default: up to 10 minutes,
    silently); a database that cannot be opened now is refused at once.

    Raises:
        StorageError: the URL is not a supported database URL, or the database cannot be opened.
    """
    url = resolve_storage_url(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(
            f"storage URL {url!r} is not a database URL; expected sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST/DB"
        ) from None
    if parsed.drivername not in SUPPORTED:
        raise StorageError(
            f"storage URL {redact(url)!r} uses an unknown scheme {parsed.drivername!r}; "
            f"expected one of: {', '.join(SUPPORTED)}"
        )
    sqlite = parsed.drivername == "sqlite"
    engine_kwargs: dict[str, object] = {}
    if sqlite:
        if parsed.database and parsed.database != ":memory:":
            _check_sqlite_path(Path(parsed.database))
        # Writers queue for the lock instead of failing with "database is locked".
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
    else:
        engine_kwargs["pool_pre_ping"] = True
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    beat = heartbeat_seconds()
    try:
        storage = _create_rdb_storage(url, engine_kwargs, beat)
        if sqlite:
            # WAL lets readers (the dashboard, other workers) read while one process writes.
            with storage.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            if parsed.database and parsed.database != ":memory:":
                _OPENED_SQLITE.add(Path(parsed.database).resolve())
    except (sqlalchemy.exc.SQLAlchemyError, OSError, ModuleNotFoundError) as exc:
        raise StorageError(f"cannot open storage {redact(url)!r}: {_reason(exc, url)}") from None
    storage.start_reconnecting(redact(url), reconnect or Reconnect())
    return storage


def missing_sqlite_file(url: str) -> Path | None:
    """The file a `sqlite:///` URL names, if it does not exist (opening it would create an
    empty database: commands that only read a study say so instead)."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return None
    database = Path(url.removeprefix("sqlite:///"))
    return None if database.is_file() else database


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the studies kept in a storage."""
    return [s.study_name for s in storage.get_all_studies()]
