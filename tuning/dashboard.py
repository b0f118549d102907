"""optuna-dashboard on the project's storage and artifact folder, served from this process.

The dashboard app (`optuna_dashboard.wsgi`) is given the storage from `tuning.storage.open_storage`,
so its SQLite connections wait out a busy study instead of failing (optuna-dashboard issue #545),
and it is served by a threaded wsgiref server that can bind port 0 and report the port it got.
Its "Best Trials" skip trials over an `[objective]` limit (`_feasible_fronts`), as Optuna does.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tuning.artifacts import artifact_dir, artifact_store
from tuning.errors import DashboardError
from tuning.storage import open_storage, redact, resolve_storage_url, study_names

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    # The browser fetches several API routes at once; one slow request must not stall the rest.
    daemon_threads = True


class _ThreadedServer6(_ThreadedServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """The page polls the API every few seconds; a line per request would bury the URL."""


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (localhost, 127.x.x.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def no_login_warning(host: str, port: int) -> str | None:
    """The warning for a dashboard reachable from other machines, or None on loopback."""
    if is_loopback(host):
        return None
    return (
        f"warning: the dashboard has no login; anyone who can reach {host}:{port} can read, edit "
        "and delete these studies. On an untrusted network keep the default host 127.0.0.1 "
        "and use an SSH tunnel: ssh -L 8080:localhost:8080 user@host"
    )


def url_for(host: str, port: int) -> str:
    """The address to open in a browser."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def _feasible_fronts() -> None:
    """optuna-dashboard 0.21 lists a study of two directions' "Best Trials" as the Pareto front of
    every COMPLETE trial, reading no constraint: the seed network, scored over a limit as the
    yardstick, would be listed. Its app's front function is wrapped, once, to leave out the
    trials over a limit (those of one direction come from the storage, `tuning.storage`)."""
    from optuna_dashboard import _app

    front: Callable[..., list[Any]] | None = getattr(_app, "get_pareto_front_trials", None)
    if front is None or getattr(front, "feasible_only", False):
        return

    def feasible_front(*, trials: Sequence[Any], directions: Sequence[Any]) -> list[Any]:
        feasible = [t for t in trials if all(v <= 0 for v in t.constraints.values())]
        return front(trials=feasible, directions=directions)

    feasible_front.feasible_only = True  # type: ignore[attr-defined]
    _app.get_pareto_front_trials = feasible_front


class Dashboard:
    """A bound, not yet serving, optuna-dashboard server.

    Raises:
        DashboardError: the port is out of range, or the address cannot be bound.
        StorageError: the storage URL is unknown or the database cannot be opened.
    """

    def __init__(
        self,
        storage: str | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        artifacts: str | Path | None = None,
    ) -> None:
        from optuna_dashboard import wsgi

        if not 0 <= port <= 65535:
            raise DashboardError(
                f"must be between 0 and 65535 (0 picks a free port). Received: port={port}",
                param="port",
            )
        self.storage_url = resolve_storage_url(storage)
        self.artifacts = artifact_dir(artifacts)
        self._storage = open_storage(self.storage_url)
        _feasible_fronts()
        app = wsgi(self._storage, artifact_store=artifact_store(self.artifacts))
        server_class = _ThreadedServer6 if ":" in host else _ThreadedServer
        try:
            self._server = make_server(
                host, port, app, server_class=server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise DashboardError(
                f"cannot listen on {host}:{port} ({reason}); expected a free port (0 picks one) "
                f"on an address of this machine. Received: host={host!r}, port={port}",
                param="port",
            ) from None
        self.host = host
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return url_for(self.host, self.port)

    def banner(self) -> str:
        """What the CLI prints once the server is bound."""
        names = study_names(self._storage)
        studies = f"studies: {', '.join(names)}" if names else "no studies yet"
        return (
            f"optuna-dashboard on {redact(self.storage_url)} ({studies}), "
            f"artifacts in {self.artifacts}\n"
            f"Dashboard: {self.url}  (Ctrl-C stops it)"
        )

    def serve_forever(self) -> None:
        """Serve until `shutdown()` is called from another thread, or Ctrl-C."""
        self._server.serve_forever()

    def shutdown(self) -> None:
        """Stop `serve_forever` (from another thread)."""
        self._server.shutdown()

    def close(self) -> None:
        """Release the port and the database connections."""
        self._server.server_close()
        self._storage.engine.dispose()
