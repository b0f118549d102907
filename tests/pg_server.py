"""A PostgreSQL server of the test's own, to restart at will without disturbing the shared one.

It runs the binaries `.ci/postgres.sh` installs (Debian's postgresql), in a fresh data folder
on a free port, and is removed afterwards. As root (CI) the server runs as the `postgres` user,
which PostgreSQL requires.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _binaries() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        pytest.fail("no PostgreSQL binaries in /usr/lib/postgresql/*/bin: run .ci/postgres.sh")
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateServer:
    """One PostgreSQL server: `start`, `restart` (as `pg_ctlcluster restart` does: fast
    shutdown, every session cut), `stop`, and its `url` (user `tuning`, no password)."""

    def __init__(self) -> None:
        self.bin = _binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="tuning-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg://tuning@127.0.0.1:{self.port}/postgres"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "tuning", "--auth=trust", "-E", "UTF8")

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        cmd = [*self._as, str(self.bin / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            pytest.fail(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")

    def _pg_ctl(self, action: str, *, check: bool = True) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.folder / "server.log")
        args = ["-D", str(self.data), "-m", "fast", "-w", "-l", log, "-o", options]
        self._run("pg_ctl", action, *args, check=check)

    def start(self) -> None:
        self._pg_ctl("start")

    def restart(self, *, down: float = 0.0) -> None:
        """Restart the server, keeping it down for `down` seconds (a failover takes a while)."""
        if down <= 0:
            self._pg_ctl("restart")
            return
        self._pg_ctl("stop")
        time.sleep(down)
        self.start()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop")

    def remove(self) -> None:
        self._pg_ctl("stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)
