"""Storage URL -> Optuna storage, with the settings that keep long studies safe."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url

from tuning.errors import StorageError

ENV_STORAGE = "TUNING_STORAGE"
DEFAULT_STORAGE = "sqlite:///storage/studies.db"
SUPPORTED = ("sqlite", "postgresql", "postgresql+psycopg")
# A trial whose worker stopped beating for this long is failed and retried once.
HEARTBEAT_SECONDS = 20
GRACE_SECONDS = 60
SQLITE_BUSY_TIMEOUT_SECONDS = 60


def resolve_storage_url(url: str | None = None) -> str:
    """`--storage` wins over `TUNING_STORAGE`, which wins over the project default."""
    return url or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(url: str | None = None) -> RDBStorage:
    """Open (creating if needed) the study database behind a URL.

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
    engine_kwargs: dict[str, object] = {}
    if parsed.drivername == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Readers (the dashboard, other workers) wait for a writer instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    except (sqlalchemy.exc.SQLAlchemyError, OSError, ModuleNotFoundError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StorageError(f"cannot open storage {redact(url)!r}: {reason}") from None


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the studies kept in a storage."""
    return [s.study_name for s in storage.get_all_studies()]
