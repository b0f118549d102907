"""Storage calls that outlive their database: a restart, a failover or a dropped connection costs
a pause, not a worker.

`Reconnecting` wraps every Optuna storage call that reaches the database. A call that fails for a
reason a retry can cure (the server is restarting, shutting down or unreachable, the connection
dropped, SQLite is locked) waits with backoff and tries again, for up to `Reconnect.seconds`;
SQLAlchemy's `pool_pre_ping` then hands out only live connections. Any other database error
ends the call at once with one line naming the database. After giving up, every later call fails
at once, so a worker ends instead of waiting again for each cleanup call.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy.exc
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import TrialState

from tuning.errors import DatabaseLostError, StorageError

T = TypeVar("T")
RETRY_SECONDS = 600.0
# PostgreSQL SQLSTATEs a retry cures: connection exceptions (class 08), the server shutting
# down or starting up (57P01-57P03), too many connections, and transactions the server aborted
# to resolve a conflict (serialization failure, deadlock).
_CURABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01")
# What a server that answers says when connecting will not work until someone changes something.
_LASTING_REFUSALS = ("does not exist", "authentication failed", "pg_hba.conf", "permission denied")
_BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0, 5.0)  # seconds between tries, then 5 s each: a heartbeat
# thread that beats soon after the database is back keeps its trial from looking stale


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Reconnect:
    """How a worker rides out a lost database: for up to `seconds`, with `say` told once when
    the database is lost and once when it is back."""

    seconds: float = RETRY_SECONDS
    say: Callable[[str], None] = _quiet


def _database_error(exc: BaseException) -> sqlalchemy.exc.DBAPIError | None:
    """The driver's error behind `exc` (Optuna wraps SQLAlchemy's in StorageInternalError)."""
    if isinstance(exc, StorageInternalError):
        exc = exc.__cause__ or exc
    return exc if isinstance(exc, sqlalchemy.exc.DBAPIError) else None


def curable(exc: BaseException) -> bool:
    """Whether retrying the call that raised `exc` can succeed once the database is back."""
    if isinstance(exc.__cause__ or exc, sqlalchemy.exc.PendingRollbackError):
        return True  # a session whose connection was lost mid-transaction: reset, then retry
    error = _database_error(exc)
    if error is None:
        return False
    if error.connection_invalidated:
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate.startswith(_CURABLE_SQLSTATES)
    if not isinstance(error, sqlalchemy.exc.OperationalError):
        return False
    reason = str(error.orig)
    if "sqlite" in type(error.orig).__module__:
        # Another process holds the write lock beyond the busy timeout.
        return "database is locked" in reason
    # psycopg gives no SQLSTATE when a connection fails: the server is down, restarting or
    # unreachable (curable), unless the server answered with a refusal that lasts.
    return not any(refusal in reason for refusal in _LASTING_REFUSALS)


def reason(exc: BaseException) -> str:
    """The first line of the database's own message behind `exc`."""
    error = _database_error(exc)
    if error is not None:
        inner: BaseException = error.orig if error.orig is not None else error
    else:
        inner = exc.__cause__ if isinstance(exc, StorageInternalError) and exc.__cause__ else exc
    text = str(inner).strip()
    first = text.splitlines()[0] if text else ""
    return first if error is not None else f"{type(inner).__name__}: {first}"


def _advice(why: str, url: str) -> str:
    """What to do about a database error no retry cures."""
    if "full" in why or "No space" in why:
        return "free some space where the database lives"
    if url.startswith("sqlite"):
        return "check that the database file and its folder are writable and not damaged"
    return "check the server's log, and the URL's user and database"


class Retrier:
    """Runs storage calls for one database, retrying curable failures; safe across threads
    (Optuna's heartbeat thread shares the storage with the worker)."""

    def __init__(self, url: str, policy: Reconnect, reset: Callable[[], None]) -> None:
        self.url = url  # redacted: it goes into messages
        self.policy = policy
        self._reset = reset  # drops this thread's session, which may hold a dead transaction
        self._lock = threading.Lock()
        self._lost_at: float | None = None  # monotonic time the current outage began
        self._gave_up = False
        self.back_at: float | None = None  # monotonic time the last outage ended
        self._local = threading.local()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`, tried again while its failure is curable and time is left."""
        if getattr(self._local, "busy", False):  # a storage call made by a retried one
            return fn(*args, **kwargs)
        self._local.busy = True
        try:
            return self._call(fn, *args, **kwargs)
        finally:
            self._local.busy = False

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        tries = 0
        while True:
            if self._gave_up:
                raise DatabaseLostError(self._given_up_line())
            try:
                result = fn(*args, **kwargs)
            except (StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
                if not curable(exc):
                    why = reason(exc)
                    raise StorageError(
                        f"the database at {self.url} failed: {why}. Expected it to keep serving "
                        f"this study; {_advice(why, self.url)}, then start the worker again"
                    ) from exc
                self._reset()
                self._wait(exc, tries)
                tries += 1
                continue
            self._back()
            return result

    def _wait(self, exc: BaseException, tries: int) -> None:
        with self._lock:
            now = time.monotonic()
            if self._lost_at is None:
                self._lost_at = now
                minutes = f"{self.policy.seconds / 60:g} min"
                self.policy.say(
                    f"lost the database at {self.url} ({reason(exc)}); retrying for up to {minutes}"
                )
            if now - self._lost_at >= self.policy.seconds:
                self._gave_up = True
                raise DatabaseLostError(self._given_up_line()) from exc
            pause = _BACKOFF[min(tries, len(_BACKOFF) - 1)]
            pause = min(pause, self._lost_at + self.policy.seconds - now)
        time.sleep(pause)

    def _back(self) -> None:
        if self._lost_at is None:  # the common case: no outage, no lock
            return
        with self._lock:
            if self._lost_at is None:
                return
            now = time.monotonic()
            self.policy.say(f"the database at {self.url} is back after {now - self._lost_at:.1f} s")
            self._lost_at, self.back_at = None, now

    def _given_up_line(self) -> str:
        return (
            f"lost the database at {self.url} for {self.policy.seconds / 60:g} min; gave up. "
            "Start the worker again once the database is back: the trial it was running is "
            "failed and retried by the next worker"
        )

    def recovered_within(self, seconds: float) -> bool:
        """Whether an outage ended less than `seconds` ago (or is still going on)."""
        if self._lost_at is not None:
            return True
        return self.back_at is not None and time.monotonic() - self.back_at < seconds


# Every storage method that reaches the database (Optuna's `_CachedStorage` calls the private
# ones), except those `Reconnecting` defines itself.
RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies", "create_new_trial",
    "_create_new_trial", "set_trial_param", "_set_trial_param", "get_trial_param",
    "get_trial_id_from_study_id_trial_number", "get_best_trial", "_get_best_trial_id",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_trial", "get_all_trials", "_get_trials",
)  # fmt: skip


class Reconnecting:
    """Mixin for an `RDBStorage` subclass: its database calls ride out a lost database.

    Put it first among the bases; call `start_reconnecting` once the storage is open (a
    database that cannot be opened at all is refused at once, not waited for).
    """

    _retrier: Retrier | None = None
    grace_period: int | None
    heartbeat_interval: int | None
    remove_session: Callable[[], None]  # RDBStorage's: drops the calling thread's session

    def start_reconnecting(self, url: str, policy: Reconnect) -> None:
        self._retrier = Retrier(url, policy, reset=self.remove_session)

    def _retried(self, name: str, *args: Any, **kwargs: Any) -> Any:
        parent = getattr(super(), name)
        if self._retrier is None:
            return parent(*args, **kwargs)
        return self._retrier.call(parent, *args, **kwargs)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        # A retried write may have been committed by the try whose answer was lost: the trial
        # then already holds this state and these values, and that is success, not an error.
        parent = super().set_trial_state_values  # type: ignore[misc]
        tries = 0

        def once() -> bool:
            nonlocal tries
            tries += 1
            try:
                return bool(parent(trial_id, state, values))
            except UpdateFinishedTrialError:
                stored = super(Reconnecting, self).get_trial(trial_id)  # type: ignore[misc]
                same = values is None or list(stored.values or []) == list(values)
                if tries > 1 and stored.state == state and same:
                    return True
                raise

        if self._retrier is None:
            return once()
        return self._retrier.call(once)

    def record_heartbeat(self, trial_id: int) -> None:
        # Given up: said by the worker's own next call; a heartbeat thread has no one to tell.
        with contextlib.suppress(DatabaseLostError):
            self._retried("record_heartbeat", trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # After an outage no worker could beat: judge staleness again only once every live
        # worker has had a grace period to beat since the database came back.
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        if self._retrier is not None and self._retrier.recovered_within(grace):
            return []
        return list(self._retried("_get_stale_trial_ids", study_id))


def _make_retried(name: str) -> Callable[..., Any]:
    def method(self: Reconnecting, *args: Any, **kwargs: Any) -> Any:
        return self._retried(name, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


for _name in RETRIED:
    setattr(Reconnecting, _name, _make_retried(_name))
