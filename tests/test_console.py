"""What a user's terminal shows: one line per error, and no library log lines, for every command.

Each command runs in a subprocess with `TF_CPP_MIN_LOG_LEVEL=0`, TensorFlow's most talkative
setting, so a library line that reaches the terminal makes a test fail whatever the user's shell
has set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from subprocess import PIPE
from typing import NamedTuple

import pytest

from tests.helpers import ROOT, SMOKE


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def command(*args: str, python: str | None = None) -> list[str]:
    """`tuning ARGS`, or `python -c PYTHON`, as an argument list."""
    return [sys.executable, *(["-c", python] if python else ["-m", "tuning.cli", *args])]


def environment(tmp: Path, **env: str) -> dict[str, str]:
    """The test's environment, TensorFlow at its most talkative, a private temp folder (where
    the library log goes) and `env`."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "TMPDIR": str(tmp), **env}


def run_all(commands: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, Result]:
    """Run the commands at once (each mostly waits on importing TensorFlow) and collect them."""
    running = {
        name: subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=PIPE, stderr=PIPE, text=True, encoding="utf-8"
        )
        for name, (argv, env) in commands.items()
    }
    results = {}
    for name, proc in running.items():
        out, err = proc.communicate(timeout=300)
        results[name] = Result(proc.returncode, out, err)
    return results


def not_a_model(folder: Path) -> Path:
    """A .keras zip with a config.json Keras cannot load: predict imports TensorFlow to find out."""
    path = folder / "broken.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", '{"class_name": "Nothing"}')
    return path


BAD_INPUTS = {
    "study: missing data file": (
        ["study", str(SMOKE), "--data", "missing.npz"],
        "error: --data: missing.npz: MNIST file not found",
    ),
    "worker: unknown key": (["worker", "{bad_toml}"], "error: {bad_toml}: unknown key"),
    "export: no database": (
        ["export", str(SMOKE), "--storage", "sqlite:///{tmp}/none.db"],
        "error: --storage: no study database at",
    ),
    "front: no database": (
        ["front", str(SMOKE), "--storage", "sqlite:///{tmp}/none.db"],
        "error: no study database at {tmp}/none.db",
    ),
    "predict: not a Keras model": (
        ["predict", "{broken}", "{broken}"],
        "error: {broken}: cannot load the model",
    ),
    "transfer: missing model": (
        ["transfer", "{tmp}/nothing.keras", "--data", "{tmp}"],
        "error: {tmp}/nothing.keras: model file not found",
    ),
    "dashboard: port out of range": (
        ["dashboard", "--port", "70000"],
        "error: --port: must be between 0 and 65535 (0 picks a free port). Received: port=70000",
    ),
    "usage: no study file": (["study"], "error: tuning study: the following arguments"),
}


# A failure during work: predict's command replaced by one that fails after TensorFlow ran.
FAILING_PROGRAM = (
    "import sys, tuning.cli as cli\n"
    "def fail(args):\n"
    "    import tensorflow as tf\n"
    "    tf.constant(1)\n"
    "    raise RuntimeError('disk on fire\\nsecond line of the message')\n"
    "cli.cmd_predict = fail\n"
    "sys.exit(cli.main(['predict', 'model.keras', 'image.png']))\n"
)
VERBOSE = ("--verbose", "TUNING_LOG=debug")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Result, str, Path]]:
    """Every command of this module run at once (each mostly waits on importing TensorFlow):
    case -> (result, expected start of standard error, its temp folder)."""
    commands, expected = {}, {}
    for i, (case, (args, start)) in enumerate(BAD_INPUTS.items()):
        tmp = tmp_path_factory.mktemp(f"bad{i}")
        bad_toml = tmp / "bad.toml"
        bad_toml.write_text("[study]\ncolour = 'red'\n")
        names = {"tmp": str(tmp), "bad_toml": str(bad_toml), "broken": str(not_a_model(tmp))}
        commands[case] = (command(*(a.format(**names) for a in args)), environment(tmp))
        expected[case] = (start.format(**names), tmp)
    tmp = tmp_path_factory.mktemp("fail")
    commands["fail"], expected["fail"] = (
        (command(python=FAILING_PROGRAM), environment(tmp)),
        ("", tmp),
    )
    for case in VERBOSE:
        tmp = tmp_path_factory.mktemp("verbose")
        broken = str(not_a_model(tmp))
        unset = environment(tmp, TF_CPP_MIN_LOG_LEVEL="")
        if case == "--verbose":
            commands[case] = (command("predict", broken, broken, "--verbose"), unset)
        else:
            commands[case] = (command("predict", broken, broken), {**unset, "TUNING_LOG": "debug"})
        expected[case] = (f"error: {broken}: cannot load the model", tmp)
    results = run_all(commands)
    return {case: (results[case], *expected[case]) for case in commands}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_every_command_reports_a_bad_input_on_exactly_one_line(
    runs: dict[str, tuple[Result, str, Path]], case: str
) -> None:
    result, start, tmp = runs[case]
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert result.stderr.startswith(start), result.stderr
    assert result.stdout == ""
    assert not list(tmp.glob("tuning-*.log"))  # a bad input leaves no log behind


def test_a_failure_during_work_is_one_line_with_status_1_and_keeps_the_log(
    runs: dict[str, tuple[Result, str, Path]],
) -> None:
    result, _, tmp = runs["fail"]
    assert result.returncode == 1
    [log] = tmp.glob("tuning-*.log")
    assert result.stderr == f"error: RuntimeError: disk on fire (details in {log})\n"
    text = log.read_text()
    assert "Traceback" in text and "second line of the message" in text
    assert "cpu_feature_guard" in text or "oneDNN" in text or "tensorflow" in text.lower()


@pytest.mark.parametrize("case", VERBOSE)
def test_verbose_brings_the_library_lines_back(
    runs: dict[str, tuple[Result, str, Path]], case: str
) -> None:
    result, last_line, _ = runs[case]
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) > 1, result.stderr  # TensorFlow's start-up lines, then the error
    assert lines[-1].startswith(last_line)
