"""The benchmarks run end to end in `--quick` mode and write their JSON and markdown.

No timing is asserted here (speed targets belong to the benchmarks themselves). What is asserted
are figures that can be wrong: counts that follow from the quick sizes (images trained, trials
per backend, budget spent), ratios and fits recomputed from the timings they were derived from,
goals that follow from the measured figures, and the bookkeeping: the same network in both
training loops, budgets never exceeded, KerasTuner Hyperband's promoted trials continuing from
their parent's weights, and the rung correlations of a stored study made up trial by trial (no
training), whose Spearman values are known. Each quick run is made once per module and read by
every test that checks it; every fold costs about a second of building and tracing, so the
quick sizes are as small as the checks allow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import common
from bench.__main__ import BENCHMARKS
from tests.helpers import ROOT


@pytest.fixture
def bench_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_npz: Path) -> Path:
    """Results go to a temporary folder; data is the small MNIST slice."""
    out = tmp_path / "bench"
    monkeypatch.setattr(common, "OUT", out)
    monkeypatch.setenv("TUNING_MNIST", str(mnist_npz))
    return out


def _quick_run(
    name: str, tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path
) -> tuple[dict[str, Any], Path]:
    """`python -m bench --quick NAME` in this process, once for the tests that read it: its result
    and the folder it wrote to (data: the small MNIST slice)."""
    from bench.__main__ import main

    out = tmp_path_factory.mktemp(name) / "bench"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(common, "OUT", out)
        patch.setenv("TUNING_MNIST", str(mnist_npz))
        assert main(["--quick", name]) == 0
    return _saved(out, name), out


def _saved(out: Path, name: str) -> dict[str, Any]:
    table = (out / f"{name}.md").read_text()
    assert table.startswith(f"Measured on: {common.machine()}")
    assert "|---|" in table
    result = json.loads((out / f"{name}.json").read_text())
    assert result["machine"] == common.machine()
    return result


def test_every_bench_script_is_registered() -> None:
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")}
    helpers = {"__init__", "__main__", "common", "harness"}  # not benchmarks
    assert scripts - helpers == set(BENCHMARKS)


def test_the_command_line_offers_every_benchmark(tmp_path: Path) -> None:
    """`python -m bench` runs from any folder; the in-process runs below cover what it does. Its
    help imports no benchmark (no TensorFlow), so this is the cheap command-line check."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "{" + ",".join(BENCHMARKS) + "," in done.stdout  # the NAME choices, in order


@pytest.fixture(scope="module")
def throughput_run(
    tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path
) -> tuple[dict[str, Any], Path]:
    return _quick_run("throughput", tmp_path_factory, mnist_npz)


def test_throughput_quick_variants(throughput_run: tuple[dict[str, Any], Path]) -> None:
    from bench import throughput

    result, out = throughput_run
    sizes, variants = result["sizes"], result["variants"]
    # Fold 1 of a 3-fold split of 300 images: 200 training images, 100 validation images.
    assert (variants["train_images"], variants["val_images"]) == (200, 100)
    images = variants["train_images"] * sizes["epochs"]
    rows = {row["variant"]: row for row in variants["rows"]}
    assert list(rows) == list(throughput.VARIANTS)  # quick runs every variant, bfloat16 too
    (runs,) = variants["rounds"]
    before = runs["before"]
    # Each figure of the table follows from the round's clocks and accuracies.
    for name in throughput.VARIANTS:
        run, row = runs[name], rows[name]
        assert run["seconds"] > run["train_seconds"]  # the fold clock holds the training clock
        assert row["images_per_second"]["median"] == pytest.approx(
            images / run["seconds"], abs=0.051
        )
        assert row["training_images_per_second"]["median"] == pytest.approx(
            images / run["train_seconds"], abs=0.051
        )
        assert row["speedup"]["median"] == pytest.approx(
            before["seconds"] / run["seconds"], abs=5.1e-4
        )
        assert row["training_speedup"]["median"] == pytest.approx(
            before["train_seconds"] / run["train_seconds"], abs=5.1e-4
        )
        assert row["val_accuracy"]["mean"] == run["val_accuracy"]
        assert row["accuracy_change"]["mean"] == pytest.approx(
            run["val_accuracy"] - before["val_accuracy"], abs=1e-6
        )
    # Steps per call change how batches reach the training step, not the updates: the same
    # weights, so the same predictions (one image of 100 would be 0.01).
    assert runs["spe1"]["val_accuracy"] == pytest.approx(runs["recipe"]["val_accuracy"], abs=1e-4)
    share = variants["augmentation_share"]["median"]
    assert share == pytest.approx(
        1 - runs["no_augment"]["train_seconds"] / runs["recipe"]["train_seconds"], abs=5.1e-4
    )
    speedup = rows[throughput.GOAL_VARIANT]["speedup"]["median"]
    assert variants["goal_speedup_met"] == (speedup >= throughput.GOAL_SPEEDUP)
    assert variants["goal_augmentation_share_met"] == (share <= throughput.GOAL_AUGMENT_SHARE)
    assert "QUICK RUN" in (out / "throughput.md").read_text()


def test_throughput_quick_loop(throughput_run: tuple[dict[str, Any], Path]) -> None:
    from bench import throughput

    result, out = throughput_run
    loop = result["loop"]
    # One fold of a 2-fold split of 200 images, 1 epoch: 100 images per trial, both loops.
    assert loop["images_per_trial"] == 100
    (row,) = loop["rounds"]
    assert loop["ours_images_per_second"]["median"] == pytest.approx(
        100 / row["ours_seconds"], abs=0.051
    )
    assert loop["bare_images_per_second"]["median"] == pytest.approx(
        100 / row["bare_seconds"], abs=0.051
    )
    assert row["ratio"] == pytest.approx(row["bare_seconds"] / row["ours_seconds"], abs=5.1e-3)
    assert loop["goal_met"] == (loop["ratio"]["median"] >= throughput.LOOP_GOAL)
    # Same seed network, recipe, seed and fold: our objective trains what the bare recipe does,
    # to the last validation image (one of 100 would be 0.01).
    assert row["ours_cv_accuracy"] == pytest.approx(row["bare_cv_accuracy"], abs=1e-4)
    assert "1 fold of 2-fold CV" in (out / "throughput.md").read_text()


@pytest.fixture(scope="module")
def search_run(
    tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path
) -> tuple[dict[str, Any], Path]:
    return _quick_run("search", tmp_path_factory, mnist_npz)


def test_search_quick_keeps_the_budget(search_run: tuple[dict[str, Any], Path]) -> None:
    from bench import search

    result, _ = search_run
    budget = result["budget"]
    # 2 folds of 100 images: a fold-epoch trains 50 images; 6 of them.
    assert budget == result["sizes"]["budget_fold_epochs"] * 50 == 300
    # Our top rung is the score every searcher is compared on: all folds of the whole subset.
    top = result["sizes"]["ladder"][-1]
    assert (top["subset"], top["folds"], top["run_folds"], top["epoch_scale"]) == (100, 2, None, 1)
    (seed,) = result["seeds"]
    for name in search.SEARCHERS:
        run = seed[name]
        spent = [p["image_epochs"] for p in run["trace"]]
        assert spent[0] > 0 and spent == sorted(spent)
        assert spent[-1] <= run["image_epochs_spent"] <= budget
        scores = [p["score"] for p in run["trace"] if p["score"] is not None]
        assert run["trials_scored"] == len(scores) >= 1
        assert run["best"] == max(scores)
        # The compute to its best: where the running best first reached it.
        first = next(p for p in run["trace"] if p["score"] == run["best"])
        assert run["image_epochs_to_best"] == first["image_epochs"]
        assert result["summary"][name]["best"]["mean"] == run["best"]
    target = min(seed[n]["best"] for n in search.SEARCHERS)
    assert seed["common_target"] == target
    for name in search.SEARCHERS:
        reached = [p["image_epochs"] for p in seed[name]["trace"] if (p["best"] or 0) >= target]
        assert seed[name]["image_epochs_to_common_target"] == reached[0]
    # The goal follows from the compute each needed to reach KerasTuner Hyperband's best.
    ours = seed["ours"]["image_epochs_to_kt_hyperband_best"]
    hyperband = seed["kt_hyperband"]["image_epochs_to_best"]
    assert seed["ours_over_kt_hyperband_compute"] == (round(ours / hyperband, 3) if ours else None)
    assert seed["goal_met"] == bool(ours and ours <= 0.5 * hyperband)
    assert result["summary"]["goal_met_seeds"] == int(seed["goal_met"])


def test_search_quick_hyperband_continues_promoted_trials(
    search_run: tuple[dict[str, Any], Path],
) -> None:
    result, _ = search_run
    hyperband = result["seeds"][0]["kt_hyperband"]
    # Factor 2, 2 epochs at most: two new trials of 1 epoch on 2 folds of 50 images (100
    # image-epochs each), then the better one promoted: it loads its parent's weights and trains
    # only its new epoch per fold (100 more, not 200), which spends the budget exactly.
    assert hyperband["trials_continued"] == 1
    assert [p["image_epochs"] for p in hyperband["trace"]] == [100, 200, 300]
    assert hyperband["image_epochs_spent"] == result["budget"]


def test_scaling_quick(bench_out: Path) -> None:
    from bench import scaling

    scaling.run(quick=True)
    result = _saved(bench_out, "scaling")
    rows = result["rows"]
    assert [r["factor"] for r in rows] == ["base", "folds"]
    # (k - 1) * S * epochs: 1 * 100 * 2, then 2 * 100 * 2.
    assert [r["trained_images"] for r in rows] == [200, 400]
    for row in rows:
        trained = (row["folds"] - 1) * row["subset"] * row["epochs"]
        assert row["trained_images"] == trained
        assert len(row["all_rounds"]) == result["rounds"] == 1
        assert row["seconds"] == min(row["all_rounds"])  # the fastest round is kept
        assert row["ratio_to_base"] == pytest.approx(row["seconds"] / rows[0]["seconds"], abs=0.011)
        assert row["trained_images_ratio"] == pytest.approx(trained / rows[0]["trained_images"])
    # The fitted seconds are the model's: a per fold, b per trained image, c per validated image
    # (two configurations for three costs: the quick fit is exact, its error says nothing).
    fit = result["fit"]
    for row in rows:
        fitted = (
            fit["seconds_per_fold"] * row["folds"]
            + fit["ms_per_trained_image"] / 1000 * row["trained_images"]
            + fit["ms_per_validated_image"] / 1000 * row["subset"] * row["epochs"]
        )
        assert row["fitted_seconds"] == pytest.approx(fitted, abs=0.011)


def test_overhead_quick(bench_out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.__main__ import main
    from bench.harness import DEFAULT_STUDY
    from tuning.study.config import load_spec

    monkeypatch.delenv("TUNING_TEST_POSTGRES", raising=False)  # the same rows on every machine
    assert main(["--quick", "overhead"]) == 0
    result = _saved(bench_out, "overhead")
    rows = result["rows"]
    assert [(r["backend"], r["processes"]) for r in rows] == [
        ("in-memory (floor)", 1),
        ("SQLite, 1 process", 1),
        ("SQLite, synchronous=NORMAL (proposed), 1 process", 1),
        ("SQLite + project TPE sampler, 1 process", 1),
        ("SQLite WAL, 2 processes", 2),
    ]
    # 4 trials on each backend: 2 chunks of 2 in this process, 2 in each of the 2 processes.
    assert result["trials_per_backend"] == 4
    assert all(row["trials"] == 4 for row in rows)
    assert ["wall_ms_per_trial" in row for row in rows] == [False] * 4 + [True]
    # What each trial writes follows from the default study's rung ladder.
    ladder = load_spec(DEFAULT_STUDY).fidelity.ladder
    assert result["rungs"] == len(ladder)
    assert result["folds_per_rung"] == [rung.folds_run for rung in ladder]
    table = (bench_out / "overhead.md").read_text()
    for row in rows:
        assert f"| {row['backend']} | {row['processes']} | {row['median_ms']} |" in table
    assert not list(bench_out.rglob("*.db"))  # temporary files removed


def test_cost_quick_sets_the_study_with_cost_beside_it_without(bench_out: Path) -> None:
    from bench import cost

    cost.run(quick=True)
    result = _saved(bench_out, "cost")
    on, off = result["runs"]["on"], result["runs"]["off"]
    assert len(on) == len(off) == result["pairs"] == 1 and result["trials_per_run"] == 1
    assert result["ratio_on_off"]["median"] == pytest.approx(on[0] / off[0], abs=1e-4)
    # The objective's cost step ran, and was timed, in the run with cost on.
    assert 0 < result["step_share"]["median"] < 1
    assert result["model_cost_ms"]["seed network"]["model"].startswith(
        "370,454 params, 22.9 MFLOP, "
    )
    assert not list(bench_out.rglob("*.db"))  # temporary files removed


def _rung_study(tmp_path: Path) -> tuple[Path, str]:
    """A study file and a stored 3-rung study whose trials were made up, not trained.

    Rung 0 -> 1 (5 trials): ranks 1 2 3 4 5 against 1 2 3 5 4, Spearman 1 - 6 * 2 / 120 = 0.9.
    Rung 1 -> 2 (4 trials): the ranking reversed, Spearman -1. A failed trial is not counted.
    """
    import dataclasses

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from tuning.protocol import PROTOCOL_VERSION, Rung

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


def _members(folder: Path, wrong: list[list[int]], n: int = 20) -> None:
    """An export's predictions on `n` images of class 0: member i says class 1 with 0.8 on the
    images in wrong[i] and class 0 with 0.9 on the others, so that the mean of several members
    is wrong where most of them are."""
    from tuning.model.predictions import TestPredictions

    labels = np.zeros(n, dtype=np.int64)
    members = np.tile([0.9, 0.1], (len(wrong), n, 1))
    for i, images in enumerate(wrong):
        members[i, images] = [0.2, 0.8]
    folder.mkdir(parents=True)
    TestPredictions(labels, members.mean(axis=0), "sha", members).save(folder)


def test_ensembles_reports_errors_against_members_from_stored_predictions(
    bench_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three members wrong on {0, 1}, {1} and {2}: alone 2, 1, 1 errors. A pair's mean is wrong
    only where both are (0.55 for class 0 against 0.45 where one is): 1, 0, 0 errors. All three
    are wrong on image 1 only, where two of them are (class 1: (0.8 + 0.8 + 0.1) / 3 > 0.5)."""
    from bench.__main__ import main

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    _members(ours, [[0, 1], [1], [2]])
    _members(theirs, [[0, 1, 2], [3, 4], [5, 6, 7]])
    assert main(["ensembles", "--models", str(ours), str(theirs)]) == 0
    result = _saved(bench_out, "ensembles")
    curve = result["exports"][0]["curve"]
    assert [(r["k"], r["subsets"], r["min"], r["max"], r["first_k"]) for r in curve] == [
        (1, 3, 1, 2, 2),
        (2, 3, 0, 1, 1),
        (3, 1, 1, 1, 1),
    ]
    assert [r["mean"] for r in curve] == pytest.approx([4 / 3, 1 / 3, 1])
    assert result["seeds_compared"][0]["sentence"].startswith(
        "mean errors 1.3 against 2.7 (3 seeds against 3): 1.3 fewer"
    )
    assert "| ours | 2 | 3 | 0.3 (0-1) | 1 |" in capsys.readouterr().out


def test_ensembles_without_predictions_is_one_error_line(
    bench_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.__main__ import main

    assert main(["ensembles", "--models", str(tmp_path / "none")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "no test predictions" in errors[0]
    assert not (bench_out / "ensembles.json").exists()


def test_backends_quick_sets_each_backend_beside_the_first_in_the_same_round(
    bench_out: Path,
) -> None:
    from bench import backends

    backends.run(quick=True, backends=["tensorflow", "jax"])
    result = _saved(bench_out, "backends")
    runs, summary = result["runs"], result["summary"]
    assert list(runs) == ["tensorflow", "jax"] and result["rounds"] == 1
    assert runs["tensorflow"][0]["versions"].keys() == {"tensorflow"}
    assert runs["jax"][0]["versions"].keys() == {"jax", "jaxlib"}
    for name, (run,) in runs.items():
        assert run["backend"] == name and run["img_s"] > 0 and run["peak_gpu_mib"] is None
        ratio = run["img_s"] / runs["tensorflow"][0]["img_s"]
        assert summary[name]["ratio"]["median"] == pytest.approx(ratio, abs=1e-3)
    assert summary["tensorflow"]["ratio"]["median"] == 1.0
    assert "| jax | jax " in (bench_out / "backends.md").read_text()
