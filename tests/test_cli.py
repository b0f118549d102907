"""End-to-end: the `tuning study` command on the smoke study, as a user runs it."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import ROOT, SMOKE, SmokeRun, ctrl_c_works
from tuning.cli import main
from tuning.device import detect
from tuning.images.mnist import file_sha256


def smoke_study(storage_url: str, data: Path, *extra: str) -> list[str]:
    """`study SMOKE --storage URL --data NPZ ... --no-progress` as command-line arguments."""
    return ["study", str(SMOKE), "--storage", storage_url, "--data", str(data), *extra,
            "--no-progress"]  # fmt: skip


def test_smoke_study_runs_records_attributes_and_summarises(smoke_run: SmokeRun) -> None:
    result = smoke_run.result
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Study smoke  (sqlite:///")
    assert f"Device: {detect().describe()}" in result.stdout
    assert "Parameters:" in result.stdout and "Seed network (trial #0)" in result.stdout
    study = optuna.load_study(study_name="smoke", storage=smoke_run.storage)
    assert f"Best: trial #{study.best_trial.number} at rung 0, CV accuracy" in result.stdout
    assert len(study.trials) == 3
    assert study.user_attrs["protocol"]["data_sha256"] == file_sha256(smoke_run.data)
    seed = study.trials[0]
    assert seed.user_attrs["baseline"] == "seed network" and seed.params["filters_0"] == 32
    for trial in study.trials:
        assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
        if trial.state == TrialState.COMPLETE:
            folds = trial.user_attrs["fold_accuracies"]
            assert len(folds) == 2 and trial.value == pytest.approx(np.mean(folds))
            assert trial.user_attrs["cv_std"] == pytest.approx(np.std(folds))
            assert {"train_seconds", "param_count", "versions"} <= set(trial.user_attrs)
    # The best trial's CV line: its mean ± std over its folds.
    best = study.best_trial
    std = best.user_attrs["cv_std"]
    assert f"CV accuracy {best.value:.4f} ± {std:.4f} over 2 folds" in result.stdout


def test_a_long_run_continues_in_fresh_processes_and_keeps_its_budget(
    smoke_run: SmokeRun,
) -> None:
    """With two trials per process the run re-executed itself once and still ran 3 trials."""
    result = smoke_run.result
    assert result.stdout.count("Best: trial #") == 1  # one summary, from the last process
    # Every process drew its bar on the terminal, and no library line (TensorFlow was at its
    # most talkative) or log file was left.
    bars = result.stderr.replace("\r", "\n").split("\n")
    assert all(line.strip() == "" or "trial" in line for line in bars), result.stderr
    assert "2/3" in result.stderr and "3/3" in result.stderr
    assert list(smoke_run.tmp.iterdir()) == []
    trials = optuna.load_study(study_name="smoke", storage=smoke_run.storage).trials
    assert len(trials) == 3 and all(t.state != TrialState.RUNNING for t in trials)


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
    mnist_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
        finished = count_trials(db)
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
    # The trial the Ctrl-C landed in is the last and failed; every trial before it is kept.
    *kept, interrupted = optuna.load_study(study_name="smoke", storage=url).trials
    assert interrupted.state == TrialState.FAIL
    assert {t.state for t in kept} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert sum(t.state == TrialState.COMPLETE for t in kept) >= finished >= 1
    before = len(kept) + 1

    # The same command again (here in this process) resumes the same study.
    assert main(smoke_study(url, mnist_npz, "--trials", "1")) == 0
    capsys.readouterr()
    assert optuna.get_all_study_names(url) == ["smoke"]
    trials = optuna.load_study(study_name="smoke", storage=url).trials
    assert len(trials) == before + 1 and trials[-1].state == TrialState.COMPLETE


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["study", *args, "--no-progress"])
    return code, capsys.readouterr().err.strip()


@pytest.fixture
def kept_study(storage_url: str) -> str:
    """An unrelated study already in the database, which no bad input may touch."""
    study = optuna.create_study(study_name="kept", storage=storage_url)
    study.tell(study.ask(), 1.0)
    return storage_url


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown storage scheme", "error: storage URL 'mongodb://localhost/x' uses an unknown "
         "scheme 'mongodb'; expected one of: sqlite, postgresql, postgresql+psycopg"),
        ("corrupt data file", "error: {tmp}/corrupt.npz: not a readable .npz archive"),
        ("bad study file", "error: {tmp}/bad.toml: 'budget.trials' must be an integer >= 1. "
         "Received: 0"),
        ("negative trials", "error: --trials must be > 0. Received: -1"),
    ],
)  # fmt: skip
def test_a_bad_input_fails_with_one_line_and_keeps_the_stored_study(
    case: str,
    expected: str,
    kept_study: str,
    mnist_npz: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "corrupt.npz").write_bytes(b"\x00" * 100)
    (tmp_path / "bad.toml").write_text("[budget]\ntrials = 0\n")
    study_file, storage, data, extra = str(SMOKE), kept_study, str(mnist_npz), []
    if case == "unknown storage scheme":
        storage = "mongodb://localhost/x"
    elif case == "corrupt data file":
        data = str(tmp_path / "corrupt.npz")
    elif case == "bad study file":
        study_file = str(tmp_path / "bad.toml")
    else:
        extra = ["--trials", "-1"]
    code, err = run_main(capsys, study_file, "--storage", storage, "--data", data, *extra)
    assert code == 2
    assert err.startswith(expected.format(tmp=tmp_path)) and "\n" not in err, err
    # The unrelated study in the same database is untouched, and no smoke study was created.
    assert optuna.get_all_study_names(kept_study) == ["kept"]
    assert len(optuna.load_study(study_name="kept", storage=kept_study).trials) == 1
