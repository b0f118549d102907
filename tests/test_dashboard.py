"""`tuning dashboard`: optuna-dashboard on a real SQLite study, polled live and seen in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from optuna_dashboard import get_note

from tests.helpers import ROOT, SMOKE, SmokeRun
from tests.live import dashboard, get_json, stop
from tuning.artifacts import artifact_store, attach_files
from tuning.device import detect
from tuning.images.mnist import file_sha256
from tuning.notes import save_note
from tuning.study.note import study_note, write_study_note

OUTPUT = ROOT / "tests" / "output"
CHROMIUM = os.environ.get("TUNING_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Without the networking flags Chromium phones home at start-up; on a closed network that stalls.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def tuning(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuning.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def toy_study(storage: str, name: str = "toy") -> optuna.Study:
    """A study made without TensorFlow, for the tests that only need something to show."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return study


# --- the command ---------------------------------------------------------------------------------


def test_dashboard_serves_studies_on_localhost_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    toy_study(storage)
    with dashboard(tmp_path, storage) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert "studies: toy" in server.stdout()
        assert "no login" not in server.stderr()
        status, body = get_json(server.url + "api/studies")
        assert status == 200
        assert [s["study_name"] for s in body["study_summaries"]] == ["toy"]
        with urllib.request.urlopen(server.url + "dashboard", timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        assert stop(server.proc, signal.SIGINT) == 0
        assert "Dashboard stopped." in server.stderr()


def test_non_local_host_warns_that_the_dashboard_has_no_login(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    with dashboard(tmp_path, storage, "--host", "0.0.0.0") as server:
        warning = server.stderr()
        assert "warning: the dashboard has no login" in warning
        assert "ssh -L 8080:localhost:8080" in warning
        assert "no studies yet" in server.stdout()


def test_a_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    """(A port out of range is one of tests/test_console.py's bad inputs.)"""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = tuning("dashboard", "--storage", storage, "--port", str(port))
    assert busy.returncode == 2
    assert busy.stderr.startswith(f"error: --port: cannot listen on 127.0.0.1:{port}")
    assert f"Received: host='127.0.0.1', port={port}" in busy.stderr


# --- the study note ------------------------------------------------------------------------------


def test_note_describes_protocol_space_data_and_export(tmp_path: Path) -> None:
    study = toy_study(f"sqlite:///{tmp_path / 'studies.db'}")
    attrs = {
        "protocol": {
            "rungs": [
                {"subset": 600, "folds": 3, "run_folds": 1, "epoch_scale": 0.5},
                {"subset": 2000, "folds": 3, "run_folds": None, "epoch_scale": 1.0},
            ],
            "max_epochs": 4,
            "seed": 7,
            "data_sha256": "ab12",
        },
        "space": [
            {"class": "Choice", "name": "filters", "default": 32, "values": [16, 32]},
            {
                "class": "Float",
                "name": "lr",
                "default": 0.001,
                "min_value": 1e-4,
                "max_value": 0.03,
                "step": None,
                "sampling": "log",
            },
        ],
        "study_file": "studies/toy.toml",
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)

    # Four trials climbed both rungs; rung 0 put the last two in the other order.
    for low, high in ((0.90, 0.95), (0.91, 0.96), (0.93, 0.97), (0.92, 0.98)):
        trial = study.ask()
        trial.report(low, step=1)
        trial.report(high, step=3)
        study.tell(trial, high)
    body = write_study_note(study)
    assert get_note(study) == body
    assert "| 0 | 1 | 1 of 3 folds CV on 600 images, epochs x 0.5 |" in body
    assert "| 1 | 3 | 3-fold CV on 2,000 images, epochs x 1 |" in body  # the rung step layout
    assert "rung 0 -> 1: Spearman +0.80 over 4 trials" in body
    assert "`ab12`" in body
    assert "| filters | Choice | 16, 32 | 32 |" in body and "0.0001 … 0.03, log" in body
    assert "tuning export studies/toy.toml" in body

    write_study_note(study)  # unchanged: no new note version
    assert study._storage.get_study_system_attrs(study._study_id)["dashboard:note_ver"] == 1
    save_note(study, "## Greek letters\nA transfer study.")
    assert get_note(study) == "## Greek letters\nA transfer study."


def test_note_names_the_devices_the_trials_ran_on(tmp_path: Path) -> None:
    study = toy_study(f"sqlite:///{tmp_path / 'studies.db'}")
    for device in ("GPU: NVIDIA H100 80GB HBM3 x1", "GPU: NVIDIA H100 80GB HBM3 x1", "CPU: EPYC"):
        study.enqueue_trial({}, user_attrs={"versions": {"device": device}})
        study.tell(study.ask(), 0.5)
    body = write_study_note(study, device="CPU: Xeon, 2 cores")
    devices = body.split("### Devices")[1].strip().splitlines()[:3]
    assert devices == [
        "- CPU: Xeon, 2 cores: 0 trial(s) so far",
        "- GPU: NVIDIA H100 80GB HBM3 x1: 2 trial(s) so far",
        "- CPU: EPYC: 1 trial(s) so far",
    ]


def test_note_of_a_study_without_tuning_attributes_is_just_its_title() -> None:
    assert study_note("bare", {}).splitlines()[0] == "## bare"
    assert "Fidelity rungs" not in study_note("bare", {})


# --- a live study, polled; then the finished study in Chromium -----------------------------------


def test_dashboard_stays_up_while_a_study_runs_and_the_study_completes(
    smoke_run: SmokeRun,
) -> None:
    result, polls = smoke_run.result, smoke_run.polls
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="smoke", storage=smoke_run.storage)
    states = [t.state for t in study.trials]
    assert len(states) == 3 and TrialState.FAIL not in states, states
    assert "database is locked" not in result.stderr + smoke_run.server.stderr()
    # Every poll answered, and the polls overlapped running trials.
    assert len(polls.statuses) > 10
    assert all(s == 200 for s in polls.statuses), [s for s in polls.statuses if s != 200]
    assert "Running" in polls.states_seen
    # For a person reading CI output: how long the polls took while trials were writing.
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "dashboard-live-polls.json").write_text(
        json.dumps(
            {
                "polls": len(polls.seconds),
                "max_seconds": max(polls.seconds, default=0.0),
                "mean_seconds": sum(polls.seconds) / max(len(polls.seconds), 1),
                "non_200": [s for s in polls.statuses if s != 200],
            },
            indent=2,
        )
    )


def test_every_run_writes_the_note_the_dashboard_shows(smoke_run: SmokeRun) -> None:
    status, detail = get_json(smoke_run.server.url + "api/studies/1")
    assert status == 200 and detail["name"] == "smoke"
    note = detail["note"]["body"]
    assert f"`{file_sha256(smoke_run.data)}`" in note
    assert "| 0 | 1 | 2-fold CV on 2,000 images, epochs x 1 |" in note  # the one rung
    assert "| learning_rate | Float |" in note
    assert f"tuning export {SMOKE}" in note
    # Rewritten as the run ended: the trials it ran on this machine are counted.
    trials = optuna.load_study(study_name="smoke", storage=smoke_run.storage).trials
    assert f"- {detect().describe()}: {len(trials)} trial(s) so far" in note


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (which never downloads a browser here)."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: install it (apt-get install chromium) or set "
            "TUNING_CHROMIUM to a Chromium binary"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def fold_plot(trial: optuna.trial.FrozenTrial, path: Path) -> Path:
    """A small real PNG, as `tuning export` attaches plots to the best trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accuracies = trial.user_attrs["fold_accuracies"]
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar([f"fold {i + 1}" for i in range(len(accuracies))], accuracies)
    ax.set_ylim(0, 1)
    ax.set_title(f"trial {trial.number}: validation accuracy per fold")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def test_browser_shows_trials_params_fold_accuracies_curves_and_artifact(
    browser: Any, smoke_run: SmokeRun, tmp_path: Path
) -> None:
    # `browser` comes first so that a missing Chromium skips before the study is run.
    study = optuna.load_study(study_name="smoke", storage=smoke_run.storage)
    best = study.best_trial
    plot = fold_plot(best, tmp_path / "fold_accuracies.png")
    attach_files(study, best, [plot], store=artifact_store(smoke_run.artifacts))
    OUTPUT.mkdir(parents=True, exist_ok=True)
    url = smoke_run.server.url
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    try:
        page.goto(url + "dashboard")
        page.get_by_text("Direction: MAXIMIZE").first.wait_for()
        assert "smoke" in page.inner_text("body")
        page.screenshot(path=OUTPUT / "dashboard-studies.png")

        page.set_viewport_size({"width": 1440, "height": 1300})  # the artifact below the attrs
        page.goto(f"{url}dashboard/studies/1/trials?numbers={best.number}")
        page.get_by_text("Artifacts", exact=True).wait_for()
        body = page.inner_text("body")
        assert f"{len(study.trials)} Trials" in body
        for trial in study.trials:
            assert page.get_by_text(f"Trial {trial.number}", exact=True).count() >= 1
        assert "Best Trial" in body
        for name in ("learning_rate", "filters_0", "batch_size"):
            assert name in body
        assert "fold_accuracies" in body and "Intermediate Values" in body
        # Per-epoch curves are the trial's own plot, not a one-line attribute.
        assert "fold_histories" not in body
        for name in ("cv_curves.png", "fold_accuracies.png"):  # attached by the run; by export
            image = page.get_by_alt_text(name)
            image.wait_for()
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
            )
        page.screenshot(path=OUTPUT / "dashboard-best-trial.png")

        page.goto(f"{url}dashboard/studies/1")
        page.get_by_text("Intermediate values", exact=True).wait_for()
        page.get_by_text("CV accuracy").first.wait_for()  # the objective's name in the charts
        assert "Objective 0" not in page.inner_text("body")
        page.screenshot(path=OUTPUT / "dashboard-history.png", full_page=True)

        page.goto(f"{url}dashboard/studies/1/note")
        page.get_by_text("Fidelity rungs", exact=True).wait_for()
        assert study.user_attrs["protocol"]["data_sha256"] in page.inner_text("body")
        page.screenshot(path=OUTPUT / "dashboard-note.png", full_page=True)
    finally:
        page.close()


def test_browser_draws_a_pareto_front_without_the_trial_over_a_limit(
    browser: Any, tmp_path: Path
) -> None:
    """A study of two directions (CV accuracy, FLOPs), made without training: its Pareto front
    in the dashboard holds the feasible non-dominated trials, never the baseline over a limit."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(
        study_name="front", storage=storage, directions=["maximize", "minimize"]
    )
    study.set_metric_names(["CV accuracy", "flops"])
    points = [(0.990, 22.9e6, 1.0), (0.985, 4.1e6, -0.1), (0.980, 5.0e6, -0.1),
              (0.970, 0.14e6, -0.9), (0.975, 1.2e6, -0.7), (0.960, 2.0e6, -0.5)]  # fmt: skip
    for accuracy, flops, constraint in points:
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_constraint("flops", constraint)
        # The list form, the only one optuna-dashboard 0.21 reads (`tuning.study.trial_cost`).
        study._storage.set_trial_system_attr(trial._trial_id, "constraints", [constraint])
        study.tell(trial, [accuracy, flops])
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with dashboard(tmp_path, storage) as server:
        _, body = get_json(server.url + f"api/studies/{study._study_id}?after=0")
        assert sorted(t["number"] for t in body["best_trials"]) == [1, 3, 4]
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{server.url}dashboard/studies/{study._study_id}")
            page.get_by_text("Pareto Front", exact=True).first.wait_for()
            page.locator(".js-plotly-plot").first.wait_for()
            page.screenshot(path=OUTPUT / "dashboard-pareto.png", full_page=True)
        finally:
            page.close()
