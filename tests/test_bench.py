"""The benchmarks run end to end in `--quick` mode and write their JSON and markdown.

No timing is asserted here (speed targets belong to the benchmarks themselves); these tests check
that each script runs, writes the fields the README table is built from, and that its
bookkeeping is right: the same network in both training loops, budgets never exceeded, KerasTuner
Hyperband's promoted trials continuing from their parent's weights, and the rung correlations
of a stored study made up trial by trial (no training), whose Spearman values are known.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import common
from bench.__main__ import BENCHMARKS
from tests.conftest import ROOT


@pytest.fixture
def bench_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_npz: Path) -> Path:
    """Results go to a temporary folder; data is the small MNIST slice."""
    out = tmp_path / "bench"
    monkeypatch.setattr(common, "OUT", out)
    monkeypatch.setenv("TUNING_MNIST", str(mnist_npz))
    return out


def _saved(out: Path, name: str) -> dict[str, Any]:
    table = (out / f"{name}.md").read_text()
    assert table.startswith(f"Measured on: {common.machine()}")
    assert "|---|" in table
    result = json.loads((out / f"{name}.json").read_text())
    assert result["machine"] == common.machine()
    return result


def test_every_bench_script_is_registered() -> None:
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")}
    assert scripts - {"__init__", "__main__", "common", "harness"} == set(BENCHMARKS)


def test_throughput_quick(bench_out: Path) -> None:
    from bench import throughput

    throughput.run(quick=True)
    result = _saved(bench_out, "throughput")
    variants = result["variants"]
    rows = {row["variant"]: row for row in variants["rows"]}
    assert list(rows) == list(throughput.VARIANTS)  # quick runs every variant, bfloat16 too
    (runs,) = variants["rounds"]
    for name in throughput.VARIANTS:
        assert runs[name]["seconds"] > runs[name]["train_seconds"] > 0
        assert 0.0 <= runs[name]["val_accuracy"] <= 1.0
        assert rows[name]["speedup"]["median"] > 0
    # The derived figures follow from the timings and accuracies of the round.
    recipe = rows["recipe"]
    assert recipe["speedup"]["median"] == pytest.approx(
        runs["before"]["seconds"] / runs["recipe"]["seconds"], rel=5e-3
    )
    assert recipe["accuracy_change"]["mean"] == pytest.approx(
        runs["recipe"]["val_accuracy"] - runs["before"]["val_accuracy"], abs=2e-4
    )
    # Steps per call change how batches reach the training step, not the updates.
    assert runs["spe1"]["val_accuracy"] == pytest.approx(runs["recipe"]["val_accuracy"], abs=0.01)
    share = variants["augmentation_share"]["median"]
    assert share == pytest.approx(
        1 - runs["no_augment"]["train_seconds"] / runs["recipe"]["train_seconds"], abs=1e-2
    )
    assert variants["goal_speedup_met"] == (recipe["speedup"]["median"] >= throughput.GOAL_SPEEDUP)
    assert variants["goal_augmentation_share_met"] == (share <= throughput.GOAL_AUGMENT_SHARE)
    loop = result["loop"]
    (row,) = loop["rounds"]
    assert row["ratio"] == pytest.approx(row["bare_seconds"] / row["ours_seconds"], rel=1e-2)
    assert loop["goal_met"] == (loop["ratio"]["median"] >= throughput.LOOP_GOAL)
    # Same seed network, recipe, seeds and folds: our objective trains what the bare recipe does.
    assert row["ours_cv_accuracy"] == pytest.approx(row["bare_cv_accuracy"], abs=0.02)
    assert "QUICK RUN" in (bench_out / "throughput.md").read_text()


def test_search_quick(bench_out: Path) -> None:
    from bench import search

    search.run(quick=True)
    result = _saved(bench_out, "search")
    budget = result["budget"]
    # 2 folds of 200 images: a fold-epoch trains 100 images.
    assert budget == result["sizes"]["budget_fold_epochs"] * 100 == 600
    # Our top rung is the score every searcher is compared on: all folds of the whole subset.
    top = result["sizes"]["ladder"][-1]
    assert (top["subset"], top["folds"], top["run_folds"], top["epoch_scale"]) == (200, 2, None, 1)
    (seed,) = result["seeds"]
    for name in search.SEARCHERS:
        run = seed[name]
        assert 0 < run["image_epochs_spent"] <= budget
        assert run["trials_scored"] >= 1
        spent = [p["image_epochs"] for p in run["trace"]]
        assert spent == sorted(spent) and spent[-1] <= budget
        scores = [p["score"] for p in run["trace"] if p["score"] is not None]
        assert run["best"] == max(scores)
        assert result["summary"][name]["best"]["mean"] == run["best"]
    # With factor 2, Hyperband promotes one trial; it trains only its new epoch per fold.
    hyperband = seed["kt_hyperband"]
    assert hyperband["trials_continued"] == 1
    assert hyperband["image_epochs_spent"] == budget
    assert seed["common_target"] == min(seed[n]["best"] for n in search.SEARCHERS)


def test_scaling_quick(bench_out: Path) -> None:
    from bench import scaling

    scaling.run(quick=True)
    result = _saved(bench_out, "scaling")
    rows = result["rows"]
    assert [r["factor"] for r in rows] == ["base", "subset", "epochs", "folds"]
    assert [r["trained_images"] for r in rows] == [200, 400, 400, 400]
    assert all(r["seconds"] > 0 for r in rows)
    assert set(result["fit"]) == {
        "seconds_per_fold",
        "ms_per_trained_image",
        "ms_per_validated_image",
        "max_relative_error",
    }


def test_overhead_quick_through_the_command_line(tmp_path: Path, mnist_npz: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TUNING_MNIST": str(mnist_npz)}
    env.pop("TUNING_TEST_POSTGRES", None)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "overhead"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = _saved(tmp_path / "storage" / "bench", "overhead")
    backends = [r["backend"] for r in result["rows"]]
    assert backends[0] == "in-memory (floor)" and "SQLite WAL, 2 processes" in backends
    for row in result["rows"]:
        assert row["trials"] == result["trials_per_backend"]
        assert row["median_ms"] > 0
    assert not list((tmp_path / "storage" / "bench").glob("*.db"))  # temporary files removed


def _rung_study(tmp_path: Path) -> tuple[Path, str]:
    """A study file and a stored 3-rung study whose trials were made up, not trained.

    Rung 0 -> 1 (5 trials): ranks 1 2 3 4 5 against 1 2 3 5 4, Spearman 1 - 6 * 2 / 120 = 0.9.
    Rung 1 -> 2 (4 trials): the ranking reversed, Spearman -1. A failed trial is not counted.
    """
    import dataclasses

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from tuning.records import PROTOCOL_VERSION
    from tuning.study.config import Rung

    study_file = tmp_path / "fid.toml"
    study_file.write_text('[study]\nname = "fid"\n')
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=url, study_name="fid", direction="maximize")
    ladder = [Rung(500, 2, run_folds=1), Rung(2000, 2, run_folds=1), Rung(2000, 2)]
    study.set_user_attr(
        "protocol",
        {"protocol_version": PROTOCOL_VERSION, "rungs": [dataclasses.asdict(r) for r in ladder]},
    )
    rung_values = [
        (TrialState.PRUNED, [0.10]),
        (TrialState.PRUNED, [0.20, 0.21]),
        (TrialState.COMPLETE, [0.30, 0.31, 0.94]),
        (TrialState.COMPLETE, [0.40, 0.41, 0.93]),
        (TrialState.COMPLETE, [0.50, 0.61, 0.91]),
        (TrialState.COMPLETE, [0.60, 0.51, 0.92]),
        (TrialState.FAIL, [0.99]),
    ]
    for i, (state, values) in enumerate(rung_values):
        study.add_trial(
            create_trial(
                state=state,
                params={"x": i / 10},
                distributions={"x": FloatDistribution(0.0, 1.0)},
                intermediate_values={3**r: v for r, v in enumerate(values)},
                value=values[-1] if state == TrialState.COMPLETE else None,
            )
        )
    return study_file, url


def test_fidelity_reports_rung_correlations(
    bench_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.__main__ import main

    study_file, url = _rung_study(tmp_path)
    assert main(["--quick", "fidelity", "--study", str(study_file), "--storage", url]) == 0
    printed = capsys.readouterr().out
    assert "rung 0 -> 1: Spearman +0.90 over 5 trials" in printed
    assert "rung 1 -> 2: Spearman -1.00 over 4 trials" in printed
    result = _saved(bench_out, "fidelity")
    assert (result["trials"], result["trials_scored"]) == (7, 6)
    assert [r["trials"] for r in result["rungs"]] == [6, 5, 4]
    pairs = [(c["lower"], c["upper"], c["trials"]) for c in result["correlations"]]
    assert pairs == [(0, 1, 5), (1, 2, 4)]
    assert [c["rho"] for c in result["correlations"]] == pytest.approx([0.9, -1.0])
    best = result["best_at_highest_rung"]
    assert (best["number"], best["rung"], best["score"]) == (2, 2, 0.94)
    table = (bench_out / "fidelity.md").read_text()
    assert "| 0 -> 1 | 5 | +0.900 |" in table and "| 1 -> 2 | 4 | -1.000 |" in table


def test_fidelity_without_the_study_is_one_error_line(
    bench_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.__main__ import main

    study_file, url = _rung_study(tmp_path)
    missing_db = tmp_path / "none.db"
    assert (
        main(["fidelity", "--study", str(study_file), "--storage", f"sqlite:///{missing_db}"]) == 2
    )
    assert not missing_db.exists()  # read-only: no empty database left behind
    other = tmp_path / "other.toml"
    other.write_text('[study]\nname = "other"\n')
    assert main(["fidelity", "--study", str(other), "--storage", url]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2
    assert "no study database" in errors[0]
    assert "study 'other'" in errors[1] and "not found" in errors[1]
    assert not (bench_out / "fidelity.json").exists()
