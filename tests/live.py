"""A live `tuning dashboard` for tests: the command run as a user runs it, its URL, its output,
and a poller that reads its API the way the open page does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, ctrl_c_works

START_TIMEOUT = 60.0


@dataclass
class Server:
    """A `tuning dashboard` subprocess and what it printed."""

    proc: subprocess.Popen[bytes]
    url: str
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int:
    """Stop a process we started, killing it if it does not exit within 10 s."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return int(proc.returncode)


@contextmanager
def dashboard(folder: Path, storage: str, *flags: str) -> Iterator[Server]:
    """Run `tuning dashboard --port 0` until the block ends; yields once it prints its URL."""
    out, err = folder / "dashboard.out", folder / "dashboard.err"
    artifacts = folder / "artifacts"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "tuning.cli", "dashboard", "--storage", storage),
                *("--artifacts", str(artifacts), "--port", "0", *flags),
            ],
            cwd=ROOT,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=ctrl_c_works,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "Dashboard: " not in out.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dashboard did not start: {err.read_text()}")
            time.sleep(0.1)
        url = out.read_text().split("Dashboard: ")[1].split()[0]
        yield Server(proc, url, out, err)
    finally:
        stop(proc)


def get_json(url: str, timeout: float = 90) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.loads(response.read())


@dataclass
class Polls:
    """What a poller of the dashboard's API saw: each answer's status (or error), each poll's
    seconds, and the trial states it read."""

    statuses: list[int | str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    states_seen: set[str] = field(default_factory=set)


@contextmanager
def polling(url: str) -> Iterator[Polls]:
    """Read the study list and every study's detail, as the open page does, until the block
    ends."""
    polls = Polls()
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            start = time.perf_counter()
            try:
                status, body = get_json(url + "api/studies")
                polls.statuses.append(status)
                for summary in body["study_summaries"]:
                    status, detail = get_json(f"{url}api/studies/{summary['study_id']}")
                    polls.statuses.append(status)
                    polls.states_seen.update(t["state"] for t in detail["trials"])
            except (urllib.error.URLError, OSError, ValueError) as exc:
                polls.statuses.append(f"{type(exc).__name__}: {exc}")
            polls.seconds.append(time.perf_counter() - start)
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield polls
    finally:
        done.set()
        poller.join(timeout=120)
