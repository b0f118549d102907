"""The benchmarks run end to end in `--quick` mode and write their JSON and markdown.

No timing is asserted here (speed targets belong to the benchmarks themselves); these tests check
that each script runs, writes the fields the README table is built from, and that its
bookkeeping is right: the same network in both training loops, budgets never exceeded, KerasTuner
Hyperband's promoted trials continuing from their parent's weights.
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
    loop = result["loop"]
    (row,) = loop["rounds"]
    for name in throughput.OURS:
        assert row[f"{name}_ratio"] > 0 and row[f"{name}_seconds"] > 0
    assert isinstance(loop["goal_met"], bool)
    # Same seed network, seeds and folds: our loop must train what plain Keras trains.
    assert row["ours_cv_accuracy"] == pytest.approx(row["plain_cv_accuracy"], abs=0.02)
    names = [v["variant"] for v in result["variants"]]
    assert names == [n for n, _ in throughput.VARIANTS if n in throughput.QUICK_VARIANTS]
    for variant in result["variants"]:
        assert variant["speedup"]["median"] > 0
        assert 0.0 <= variant["val_accuracy"]["mean"] <= 1.0
    assert result["variants"][0]["accuracy_change"]["mean"] == 0.0  # the baseline itself


def test_search_quick(bench_out: Path) -> None:
    from bench import search

    search.run(quick=True)
    result = _saved(bench_out, "search")
    budget = result["sizes"]["budget"]
    (seed,) = result["seeds"]
    for name in search.SEARCHERS:
        run = seed[name]
        assert 0 < run["epochs_spent"] <= budget
        assert run["trials_scored"] >= 1
        epochs = [p["epochs"] for p in run["trace"]]
        assert epochs == sorted(epochs) and epochs[-1] <= budget
        scores = [p["score"] for p in run["trace"] if p["score"] is not None]
        assert run["best"] == max(scores)
        assert result["summary"][name]["best"]["mean"] == run["best"]
    # With factor 2, Hyperband promotes one trial; it trains only its new epoch per fold.
    hyperband = seed["kt_hyperband"]
    assert hyperband["trials_continued"] == 1
    assert hyperband["epochs_spent"] == budget == 6
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
