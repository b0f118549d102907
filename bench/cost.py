"""What measuring each trial's cost costs: the smoke study with cost measurement on and off.

Each trial's network is counted (params, FLOPs) and timed (batch 1 and 256) before it trains
(`tuning.model.cost.model_cost`, called by the objective). Here the smoke study
(`studies/smoke.toml`: 2,000 images, 2 folds, 1 epoch, 3 trials) runs in this process, each
time in a fresh SQLite file with the same seeded sampler, so on and off try the same networks;
runs alternate (on, off, off, on, ...) so that a busy spell on the shared machine falls on both.
Reported: the wall time of each, the ratio on / off of each pair with its spread, and, beside
it, what `model_cost` itself takes on the seed network and on a tiny one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import optuna

from bench import common
from bench.harness import ROOT, load_average, spread
from tuning.hp import OptunaHyperParameters
from tuning.images.dataset import load_training
from tuning.model.cost import model_cost
from tuning.records import ModelCost, library_versions
from tuning.study import objective as objectives
from tuning.study.config import StudySpec, load_spec
from tuning.study.create import open_study
from tuning.study.objective import RungData, make_objective, rung_data
from tuning.study.space import CNNHyperModel, seed_params

SMOKE = ROOT / "studies" / "smoke.toml"
# One block of 8 filters, global average pooling and 32 units: the cheap end of the space.
TINY = {"conv_blocks": 1, "filters_0": 8, "convs_0": 1, "head": "gap", "dense_units": 32}


def _smoke_seconds(
    spec: StudySpec, data: list[RungData], sha256: str, folder: Path, *, measure_cost: bool
) -> tuple[float, float]:
    """Wall seconds of the smoke study's trials in a new SQLite file, cost measured or not, and
    the seconds spent in the cost step."""
    url = f"sqlite:///{folder / f'smoke-{time.monotonic_ns()}.db'}"
    study, hypermodel = open_study(spec, storage=url, data_sha256=sha256)
    objective = make_objective(
        hypermodel, data, spec=spec, versions=library_versions(), artifacts=folder / "artifacts"
    )
    spent: list[float] = []
    with _cost_step(spent if measure_cost else None):
        start = time.perf_counter()
        study.optimize(objective, n_trials=spec.budget.trials)
        return time.perf_counter() - start, sum(spent)


@contextlib.contextmanager
def _cost_step(spent: list[float] | None) -> Iterator[None]:
    """The objective's cost step (build, count, time, store, limits) timed into `spent`, or, with
    None, left out: the smoke study has no limits, so nothing else changes. (The objective has
    no switch of its own.)"""
    measure = objectives._measure

    def timed(*args: Any) -> ModelCost:
        start = time.perf_counter()
        try:
            return measure(*args)
        finally:
            if spent is not None:
                spent.append(time.perf_counter() - start)

    def left_out(*args: Any) -> ModelCost:
        return ModelCost(params=0, flops=None)

    objectives._measure = timed if spent is not None else left_out  # type: ignore[assignment]
    try:
        yield
    finally:
        objectives._measure = measure


def _model_cost_ms(params: dict[str, Any], repeats: int) -> dict[str, Any]:
    """What `model_cost` (count and time) takes on the network `params` describe, in ms, on
    a fresh build each time, as a trial does."""
    hypermodel = CNNHyperModel(max_epochs=1)
    values = {**seed_params(1), **params}
    seconds, cost = [], None
    hp = OptunaHyperParameters(optuna.trial.FixedTrial(values))  # type: ignore[arg-type]
    for _ in range(repeats):
        model = hypermodel.build(hp)
        start = time.perf_counter()
        cost = model_cost(model)
        seconds.append((time.perf_counter() - start) * 1000)
        keras.backend.clear_session()
    assert cost is not None and cost.latency is not None
    return {
        "model": cost.describe(),
        "ms": spread(seconds, 1),
        "batch1_ms": round(cost.latency.batch1_ms, 3),
        "batch256_ms": round(cost.latency.batch256_ms, 4),
        "threads": cost.latency.threads,
    }


def run(*, quick: bool) -> dict[str, Any]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pairs = 1 if quick else 5
    spec = load_spec(SMOKE)
    if quick:  # one trial on 400 images per run: proves the bench works
        spec = dataclasses.replace(
            spec,
            budget=dataclasses.replace(spec.budget, trials=1),
            fidelity=dataclasses.replace(spec.fidelity, subset=400, rungs=()),
        )
    images = load_training(spec.data_source(os.environ.get("TUNING_MNIST")))
    data = rung_data(spec, images)
    load_before = load_average()
    runs: dict[str, list[float]] = {"on": [], "off": []}
    shares: list[float] = []  # of each run with cost on: the cost step's seconds / wall
    common.OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=common.OUT) as tmp:
        if not quick:  # a first run: TensorFlow's start-up falls on neither side
            _smoke_seconds(spec, data, images.sha256, Path(tmp), measure_cost=False)
        for pair in range(pairs):
            order = ("on", "off") if pair % 2 == 0 else ("off", "on")
            for name in order:
                seconds, step = _smoke_seconds(
                    spec, data, images.sha256, Path(tmp), measure_cost=name == "on"
                )
                runs[name].append(seconds)
                if name == "on":
                    shares.append(step / seconds)
                print(
                    f"pair {pair + 1}: cost {name} {seconds:.2f} s (step {step:.2f} s)", flush=True
                )
    ratios = [on / off for on, off in zip(runs["on"], runs["off"], strict=True)]
    cost_ms: dict[str, dict[str, Any]] = {
        "seed network": _model_cost_ms({}, 1 if quick else 5),
        "tiny network": _model_cost_ms(TINY, 1 if quick else 5),
    }
    ratio = spread(ratios, 4)
    walls = {name: spread(values, 2) for name, values in runs.items()}
    result: dict[str, Any] = {
        "trials_per_run": spec.budget.trials,
        "pairs": pairs,
        "seconds": walls,
        "runs": runs,
        "ratio_on_off": ratio,
        "overhead_percent_median": round((statistics.median(ratios) - 1) * 100, 2),
        "step_share": spread(shares, 4),
        "goal_met": statistics.median(ratios) <= 1.02 and statistics.median(shares) <= 0.02,
        "model_cost_ms": cost_ms,
        "load_before": load_before,
        "load_after": load_average(),
    }
    table = (
        f"The smoke study ({spec.budget.trials} trial(s) per run), {pairs} interleaved pair(s) "
        f"of runs, in one process; load average before/after {load_before} / "
        f"{result['load_after']}.\n\n"
        "| cost measured | wall s, median (min to max) |\n|---|---|\n"
        + "\n".join(
            f"| {name} | {s['median']} ({s['min']} to {s['max']}) |" for name, s in walls.items()
        )
        + f"\n\nRatio on / off per pair: median {ratio['median']} ({ratio['min']} to "
        f"{ratio['max']}): {result['overhead_percent_median']:+.2f} % (goal: at most +2 %). "
        f"Time in the cost step itself, of each run's wall time with cost on: median "
        f"{100 * result['step_share']['median']:.2f} % ({100 * result['step_share']['min']:.2f} "
        f"to {100 * result['step_share']['max']:.2f} %).\n\n"
        "| network | `model_cost` ms, median (min to max) | batch-1 ms/img | "
        "batch-256 ms/img | threads |\n|---|---|---:|---:|---:|\n"
        + "\n".join(
            f"| {name} ({c['model']}) | {c['ms']['median']} ({c['ms']['min']} to "
            f"{c['ms']['max']}) | {c['batch1_ms']} | {c['batch256_ms']} | {c['threads']} |"
            for name, c in cost_ms.items()
        )
    )
    common.save("cost", result, table)
    return result
