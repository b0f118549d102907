"""The user's terminal: the command's own lines only.

TensorFlow's C++ logging, absl, oneDNN, Keras and Optuna all write to standard error, some of
them (the C++ side) straight to file descriptor 2, where no Python setting reaches. So a command
moves descriptor 2 to a log file and keeps the terminal for itself: progress bars, warnings it
means to give and one-line errors go to `Console.err`, everything else to the log. The log has no
name (it is unlinked as soon as it is opened), so nothing is left behind however the process
ends; a command that fails saves it to a file the error message names.
`verbose` (`--verbose`, `TUNING_LOG=debug`) leaves standard error alone: every library line shows.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TextIO

ENV_LOG = "TUNING_LOG"


def verbose_from_env() -> bool:
    """Whether `TUNING_LOG=debug` asks for every library log line."""
    return os.environ.get(ENV_LOG, "").strip().lower() == "debug"


class Console:
    """Where a command's own output goes, and where library logs went instead."""

    def __init__(self, err: TextIO, terminal_fd: int | None = None):
        self.err = err
        self._terminal_fd = terminal_fd  # None: standard error was left alone

    def say(self, message: str) -> None:
        """A line of the command's own (progress, notices) on the terminal's standard error."""
        self.err.write(message + "\n")
        self.err.flush()

    def error(self, message: str) -> None:
        """`error: message` on a line of its own, whatever the message holds."""
        self.say(f"error: {' '.join(message.split())}")

    def warn(self, message: str) -> None:
        """`warning: message` on a line of its own."""
        self.say(f"warning: {' '.join(message.split())}")

    def save_log(self) -> Path | None:
        """Copy the library log so far to a file that outlives the process (the command failed,
        and the log holds the details); None when there is no log (verbose, or under a test)."""
        if self._terminal_fd is None:
            return None
        sys.stderr.flush()
        try:
            fd, name = tempfile.mkstemp(prefix="tuning-", suffix=".log")
            with os.fdopen(fd, "wb") as saved:
                offset = 0
                while chunk := os.pread(2, 1 << 20, offset):
                    saved.write(chunk)
                    offset += len(chunk)
        except OSError:  # /dev/null (no temp folder) cannot be read back: no log to give
            return None
        return Path(name)

    def detach(self) -> None:
        """Give descriptor 2 back to the terminal: the process is about to be replaced (exec),
        and the next one opens a log of its own."""
        if self._terminal_fd is not None:
            sys.stderr.flush()
            os.dup2(self._terminal_fd, 2)


def duration(seconds: float, *, about: bool = False) -> str:
    """Seconds as a person says them: '41 min 57 s', '1 h 0 min 5 s'; with `about`, rounded as
    an estimate is: '45 s', '40 min', '2 h 5 min'."""
    if about:
        if seconds < 59.5:
            return f"{max(1, round(seconds))} s"
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours} h {minutes} min" if hours else f"{minutes} min"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min {secs} s"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _redirectable() -> bool:
    # Only a real process's descriptor 2; under a test's captured sys.stderr, write to that.
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, ValueError, OSError):
        return False


def _library_verbosity(verbose: bool) -> None:
    import optuna

    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        optuna.logging.set_verbosity(optuna.logging.INFO)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and grouped TPE are marked experimental; the warnings say nothing actionable.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("absl").setLevel(logging.ERROR)


def open_console(*, verbose: bool) -> Console:
    """Set up this process's terminal: quiet (library lines to a log file) unless `verbose`."""
    _library_verbosity(verbose)
    if verbose or not _redirectable():
        return Console(sys.stderr)
    sys.stderr.flush()
    try:
        fd, name = tempfile.mkstemp(prefix="tuning-", suffix=".log")  # opened for read and write
        os.unlink(name)
    except OSError:  # no writable temp folder: the library lines are dropped instead
        fd = os.open(os.devnull, os.O_WRONLY)
    terminal = os.dup(2)
    os.dup2(fd, 2)
    os.close(fd)
    # Python's own warnings and logging write to sys.stderr, which now ends in the log too.
    err = os.fdopen(terminal, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    return Console(err, terminal)
