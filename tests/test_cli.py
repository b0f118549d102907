"""End-to-end: the `tuning study` command on the smoke study, as a user runs it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import ROOT, SMOKE, ctrl_c_works
from tuning.cli import main
from tuning.device import detect
from tuning.images.mnist import file_sha256
from tuning.study.config import load_spec
from tuning.study.run import open_study
from tuning.study.space import CNNHyperModel, seed_params


def tuning(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuning.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def smoke_study(storage_url: str, data: Path, *extra: str) -> list[str]:
    """`study SMOKE --storage URL --data NPZ ... --no-progress` as command-line arguments."""
    return [
        "study",
        str(SMOKE),
        "--storage",
        storage_url,
        "--data",
        str(data),
        *extra,
        "--no-progress",
    ]


def test_smoke_study_runs_records_attributes_and_summarises(
    mnist_npz: Path, storage_url: str
) -> None:
    # TensorFlow's most talkative setting: still no library line may reach the terminal.
    result = tuning(
        *smoke_study(storage_url, mnist_npz), env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("Study smoke  (sqlite:///")
    assert f"Device: {detect().describe()}" in result.stdout
    assert "Best: trial #" in result.stdout and "Parameters:" in result.stdout
    assert "Seed network (trial #0)" in result.stdout

    study = optuna.load_study(study_name="smoke", storage=storage_url)
    assert len(study.trials) == 3
    assert study.user_attrs["protocol"]["data_sha256"] == file_sha256(mnist_npz)
    seed = study.trials[0]
    assert seed.user_attrs["baseline"] == "seed network" and seed.params["filters_0"] == 32
    for trial in study.trials:
        assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
        if trial.state == TrialState.COMPLETE:
            assert len(trial.user_attrs["fold_accuracies"]) == 2
            assert {"cv_std", "train_seconds", "param_count", "versions"} <= set(trial.user_attrs)
            assert trial.value is not None and 0.0 <= trial.value <= 1.0
    assert "±" in result.stdout


def count_trials(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[
                0
            ]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_ctrl_c_leaves_no_running_trial_and_the_study_resumes(
    mnist_npz: Path, tmp_path: Path
) -> None:
    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    cmd = [sys.executable, "-m", "tuning.cli", *smoke_study(url, mnist_npz, "--trials", "50")]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_works,
    )
    try:
        deadline = time.monotonic() + 240
        while count_trials(db) < 1 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        time.sleep(1.0)  # well inside the next trial
        proc.send_signal(signal.SIGINT)
        # Once (1 of 2 CI runs, 26 Nov 2026) the process took over 120 s to stop; a Ctrl-C that
        # lands inside an SQLite write may wait out the 60 s busy timeout before the trial is
        # marked FAIL. Not yet explained: a longer wait here, a hang still fails.
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Run the same command again to resume" in stderr
    study = optuna.load_study(study_name="smoke", storage=url)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    before = len(study.trials)
    assert 1 <= before < 50

    resumed = tuning(*smoke_study(url, mnist_npz, "--trials", "1"))
    assert resumed.returncode == 0, resumed.stderr
    assert optuna.get_all_study_names(url) == ["smoke"]
    assert len(optuna.load_study(study_name="smoke", storage=url).trials) == before + 1


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["study", *args, "--no-progress"])
    return code, capsys.readouterr().err.strip()


def test_bad_inputs_fail_with_one_line_and_keep_the_stored_study(
    mnist_npz: Path, storage_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = optuna.create_study(study_name="kept", storage=storage_url)
    study.tell(study.ask(), 1.0)

    code, err = run_main(
        capsys, str(SMOKE), "--storage", "mongodb://localhost/x", "--data", str(mnist_npz)
    )
    assert code == 2 and err == (
        "error: storage URL 'mongodb://localhost/x' uses an unknown scheme 'mongodb'; "
        "expected one of: sqlite, postgresql, postgresql+psycopg"
    )

    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"\x00" * 100)
    code, err = run_main(capsys, str(SMOKE), "--storage", storage_url, "--data", str(corrupt))
    assert code == 2 and err.startswith(f"error: {corrupt}: not a readable .npz archive")

    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[budget]\ntrials = 0\n")
    code, err = run_main(capsys, str(bad_toml), "--storage", storage_url, "--data", str(mnist_npz))
    assert (
        code == 2
        and err == f"error: {bad_toml}: 'budget.trials' must be an integer >= 1. Received: 0"
    )

    code, err = run_main(capsys, str(SMOKE), "--storage", storage_url, "--trials", "-1")
    assert code == 2 and "--trials must be > 0. Received: -1" in err

    # The unrelated study in the same database is untouched, and no smoke study was created.
    assert optuna.get_all_study_names(storage_url) == ["kept"]
    assert len(optuna.load_study(study_name="kept", storage=storage_url).trials) == 1


def test_a_nan_trial_fails_and_the_study_continues_end_to_end(
    mnist_npz: Path, storage_url: str
) -> None:
    """A learning rate of 1e6 makes the seed network's loss NaN in its first epoch."""
    spec = load_spec(SMOKE)
    hypermodel = CNNHyperModel(max_epochs=spec.fidelity.max_epochs)
    study = open_study(
        spec, storage=storage_url, data_sha256=file_sha256(mnist_npz), hypermodel=hypermodel
    )
    study.enqueue_trial({**seed_params(1), "optimizer": "sgd", "learning_rate": 1e6})

    result = tuning(*smoke_study(storage_url, mnist_npz, "--trials", "3"))
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="smoke", storage=storage_url).trials
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE, TrialState.FAIL]
    assert "loss became nan" in trials[1].user_attrs["fail_reason"]
    assert trials[2].state in (TrialState.COMPLETE, TrialState.PRUNED)


def test_a_long_run_continues_in_fresh_processes_and_keeps_its_budget(
    mnist_npz: Path, storage_url: str, tmp_path: Path
) -> None:
    """With two trials per process the run re-executes itself once and still runs 3 trials."""
    logs = tmp_path / "tmp"
    logs.mkdir()
    env = {"TUNING_TRIALS_PER_PROCESS": "2", "TMPDIR": str(logs), "TF_CPP_MIN_LOG_LEVEL": "0"}
    argv = smoke_study(storage_url, mnist_npz)
    argv.remove("--no-progress")
    result = tuning(*argv, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Best: trial #") == 1  # one summary, from the last process
    # Every process drew its bar on the terminal, and no library line or log file was left.
    bars = result.stderr.replace("\r", "\n").split("\n")
    assert all(line.strip() == "" or "trial" in line for line in bars), result.stderr
    assert "3/3" in result.stderr
    assert list(logs.iterdir()) == []
    trials = optuna.load_study(study_name="smoke", storage=storage_url).trials
    assert len(trials) == 3 and all(t.state != TrialState.RUNNING for t in trials)
