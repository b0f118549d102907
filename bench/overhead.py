"""Storage and reporting cost per trial, in ms, with no training.

Each trial does what `tuning.study.objective.make_objective` does to its storage for the default
study's rung ladder: `ask` with the seed network's hyperparameters (network and recipe), the
`versions` user attribute, then per rung the `rungs`, `fold_accuracies`, `cv_std`,
`param_count` and `train_seconds` attributes, one `report` (at step 3**rung) and, below the top
rung, one `should_prune`; then `trial_seconds`, the curves artifacts of the last rung (a JSON
file of per fold, per epoch loss, accuracy, val_loss, val_accuracy, and a plot-sized file,
uploaded to a temporary artifact folder), and `tell`. The pruner is the study's; its decisions
are ignored so that every trial does the same work. Backends:

- in-memory storage, as a floor;
- SQLite through `tuning.storage.open_storage` (WAL, busy timeout, heartbeat), one process;
- the same SQLite file shared by 2 processes at once (as `make workers` does);
- PostgreSQL, 1 and 2 processes, when `TUNING_TEST_POSTGRES` holds a URL (`bash .ci/postgres.sh`);
- SQLite with `PRAGMA synchronous=NORMAL` (a proposal: one fsync per checkpoint, not per commit);
- SQLite with the project's TPE sampler instead of random sampling: what sampling adds.

Single-process backends run interleaved in chunks; per-trial times are wall-clock, median and
mean, and for TPE also over the last quarter of the trials (its cost grows with the study).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.distributions import BaseDistribution

from bench import common
from bench.harness import DEFAULT_STUDY, load_average
from tuning.records import TrialKey
from tuning.storage import open_storage
from tuning.study.config import load_spec
from tuning.study.rungs import RungRecord, rung_step

ENV_POSTGRES = "TUNING_TEST_POSTGRES"
PLOT_BYTES = 45_000  # a curves plot of the smoke study is 43-48 kB


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")


def _trial(
    study: optuna.Study,
    dists: dict[str, BaseDistribution],
    folds: list[int],
    epochs: int,
    versions: dict[str, str],
    rng: random.Random,
) -> float:
    """One trial's storage traffic as the objective writes it, climbing every rung (`folds`:
    the folds each rung runs); returns its seconds."""
    start = time.perf_counter()
    trial = study.ask(fixed_distributions=dists)
    trial.set_user_attr("versions", versions)
    records: list[dict[str, Any]] = []
    done: list[float] = []
    for rung, rung_folds in enumerate(folds):
        done = [rng.uniform(0.9, 0.99) for _ in range(rung_folds)]
        mean = statistics.fmean(done)
        records.append(
            RungRecord(rung, mean, statistics.pstdev(done), done, epochs, 10.0).as_attr()
        )
        trial.set_user_attr(TrialKey.RUNGS, records)
        trial.set_user_attr("fold_accuracies", done)
        trial.set_user_attr("cv_std", statistics.pstdev(done))
        trial.set_user_attr("param_count", 421_642)
        trial.set_user_attr("train_seconds", 10.0 * (rung + 1))
        trial.report(mean, step=rung_step(rung))
        if rung + 1 < len(folds):
            trial.should_prune()
    trial.set_user_attr("trial_seconds", 101.0)
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    histories = [{k: [rng.random() for _ in range(epochs)] for k in keys} for _ in done]
    _upload_curves(trial, histories)
    study.tell(trial, statistics.fmean(done))
    return time.perf_counter() - start


def _upload_curves(trial: optuna.Trial, histories: list[dict[str, list[float]]]) -> None:
    """What `tuning.study.curves.attach_curves` stores: a JSON file and a plot (drawing not
    timed)."""
    store = FileSystemArtifactStore(_artifact_folder())
    with tempfile.TemporaryDirectory() as folder:
        data, plot = Path(folder) / "cv_curves.json", Path(folder) / "cv_curves.png"
        data.write_text(json.dumps({"folds": histories}))
        plot.write_bytes(os.urandom(PLOT_BYTES))
        for path in (data, plot):
            upload_artifact(study_or_trial=trial, file_path=str(path), artifact_store=store)


@functools.cache
def _artifact_folder() -> str:
    return tempfile.mkdtemp(prefix="bench-overhead-artifacts-")


def _worker(args: tuple[Any, ...]) -> tuple[float, float, list[float]]:
    """A separate process: `n` trials on a shared study; returns (start, end, seconds per trial)."""
    url, name, pruner, dists, folds, epochs, n, versions = args
    _quiet()
    study = optuna.load_study(
        study_name=name,
        storage=open_storage(url),
        sampler=optuna.samplers.RandomSampler(seed=os.getpid()),
        pruner=pruner,
    )
    rng = random.Random(os.getpid())
    begin = time.time()
    seconds = [_trial(study, dists, folds, epochs, versions, rng) for _ in range(n)]
    return begin, time.time(), seconds


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    tail = ms[-max(1, len(ms) // 4) :]
    return {
        "trials": len(ms),
        "median_ms": round(statistics.median(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "last_quarter_mean_ms": round(statistics.fmean(tail), 2),
    }


def _seed_distributions() -> tuple[dict[str, BaseDistribution], dict[str, str], Any]:
    """The seed network's hyperparameter distributions, library versions, the study's pruner."""
    from tuning.hp import OptunaHyperParameters
    from tuning.records import library_versions
    from tuning.study.sampling import make_pruner
    from tuning.study.space import CNNHyperModel, seed_params

    spec = load_spec(DEFAULT_STUDY)
    study = optuna.create_study()
    study.enqueue_trial(seed_params(spec.fidelity.max_epochs))
    trial = study.ask()
    hypermodel = CNNHyperModel(max_epochs=spec.fidelity.max_epochs)
    hp = OptunaHyperParameters(trial)
    hypermodel.build(hp)  # the network's hyperparameters, and the recipe's (build compiles by it)
    hypermodel.recipe(hp)
    import keras

    keras.backend.clear_session()
    return dict(trial.distributions), library_versions(), make_pruner(spec)


def _synchronous_normal(connection: Any, _record: Any) -> None:
    connection.execute("PRAGMA synchronous=NORMAL")


def _storage(url: str | None, *, synchronous_normal: bool = False) -> Any:
    """`open_storage(url)`; in-memory for None; optionally SQLite with `synchronous=NORMAL`.

    In WAL mode, NORMAL syncs the log at checkpoints instead of at every commit: still safe
    against corruption, but a power cut may lose the last commits.
    """
    if url is None:
        return optuna.storages.InMemoryStorage()
    storage = open_storage(url)
    if synchronous_normal:
        sqlalchemy.event.listen(storage.engine, "connect", _synchronous_normal)
        storage.engine.dispose()  # pooled connections reconnect with the pragma
    return storage


def _make_study(storage: Any, sampler: optuna.samplers.BaseSampler, pruner: Any) -> Any:
    name = f"bench-overhead-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", sampler=sampler, pruner=pruner
    )
    return study


def run(*, quick: bool) -> dict[str, Any]:
    _quiet()
    # Quick: 2 chunks of 2 trials, 2 per worker process; starting the 2 workers (each imports
    # TensorFlow through `tuning.study`) is most of the quick run anyway.
    n = 4 if quick else 200
    chunks = 2 if quick else 4
    dists, versions, pruner = _seed_distributions()
    spec = load_spec(DEFAULT_STUDY)
    folds = [rung.folds_run for rung in spec.fidelity.ladder]
    epochs = spec.fidelity.max_epochs
    postgres = os.environ.get(ENV_POSTGRES)
    load_before = load_average()
    rows: list[dict[str, Any]] = []
    common.OUT.mkdir(parents=True, exist_ok=True)
    # Under storage/ (the real disk the studies use), not a RAM-backed /tmp.
    with tempfile.TemporaryDirectory(dir=common.OUT) as tmp:
        from tuning.study.sampling import make_sampler

        def sqlite(name: str) -> str:
            return f"sqlite:///{Path(tmp).resolve() / name}.db"

        def random_sampler() -> optuna.samplers.BaseSampler:
            return optuna.samplers.RandomSampler(0)

        single: dict[str, Any] = {
            "in-memory (floor)": _make_study(_storage(None), random_sampler(), pruner),
            "SQLite, 1 process": _make_study(_storage(sqlite("a")), random_sampler(), pruner),
            "SQLite, synchronous=NORMAL (proposed), 1 process": _make_study(
                _storage(sqlite("b"), synchronous_normal=True), random_sampler(), pruner
            ),
            "SQLite + project TPE sampler, 1 process": _make_study(
                _storage(sqlite("c")), make_sampler(spec), pruner
            ),
        }
        if postgres:
            single["PostgreSQL, 1 process"] = _make_study(
                _storage(postgres), random_sampler(), pruner
            )
        seconds: dict[str, list[float]] = {name: [] for name in single}
        rng = random.Random(0)
        for _ in range(chunks):
            for name, study in single.items():
                for _ in range(n // chunks):
                    seconds[name].append(_trial(study, dists, folds, epochs, versions, rng))
        rows += [{"backend": name, "processes": 1, **_stats(s)} for name, s in seconds.items()]

        multi = {"SQLite WAL, 2 processes": sqlite("d")}
        if postgres:
            multi["PostgreSQL, 2 processes"] = postgres
        context = multiprocessing.get_context("spawn")
        pg_names: list[str] = []
        for name, url in multi.items():
            study = _make_study(_storage(url), random_sampler(), pruner)
            job = (url, study.study_name, pruner, dists, folds, epochs, n // 2, versions)
            with context.Pool(2) as pool:
                results = pool.map(_worker, [job, job])
            wall = max(r[1] for r in results) - min(r[0] for r in results)
            per_trial = [s for r in results for s in r[2]]
            rows.append(
                {
                    "backend": name,
                    "processes": 2,
                    **_stats(per_trial),
                    "wall_ms_per_trial": round(wall * 1000 / len(per_trial), 2),
                }
            )
            if url == postgres:
                pg_names.append(study.study_name)
        if postgres:  # the PostgreSQL database is shared (with the tests): leave it as it was
            pg_names.append(single["PostgreSQL, 1 process"].study_name)
            for name in pg_names:
                optuna.delete_study(study_name=name, storage=open_storage(postgres))
    result = {
        "trials_per_backend": n,
        "rungs": len(folds),
        "folds_per_rung": folds,
        "epochs": epochs,
        "postgres": bool(postgres),
        "load_before": load_before,
        "load_after": load_average(),
        "rows": rows,
    }
    table = (
        f"Per trial: ask + {len(dists)} parameters, {len(folds)} reports and "
        f"{len(folds) - 1} pruning checks ({len(folds)} rungs), {5 * len(folds) + 2} "
        f"user-attribute writes, 2 artifacts, tell ({n} trials per backend; load average "
        f"before/after {load_before} / {result['load_after']}"
        f"{'' if postgres else '; PostgreSQL not measured: TUNING_TEST_POSTGRES unset'}).\n\n"
        "| storage | processes | median ms/trial | mean ms/trial | mean, last quarter | "
        "wall ms/trial (both processes) |\n|---|---:|---:|---:|---:|---:|\n"
    )
    table += "\n".join(
        f"| {r['backend']} | {r['processes']} | {r['median_ms']} | {r['mean_ms']} | "
        f"{r['last_quarter_mean_ms']} | {r.get('wall_ms_per_trial', '')} |"
        for r in rows
    )
    common.save("overhead", result, table)
    return result
