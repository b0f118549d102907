"""One summary line per step, from the venv (`python -m tools.device_check report-...`), and
the small inputs of a rehearsal (QUICK=1). Each line is printed and added to $OUT/metrics.tsv."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import sys
from pathlib import Path
from typing import Any


def quick_inputs(mnist: Path, folder: Path) -> None:
    """A rehearsal's data: 1,500 training and 500 test images of `mnist`, and the two study
    files with every subset shrunk to fit."""
    import numpy as np

    with np.load(mnist) as a:
        np.savez_compressed(
            folder / "mnist.npz",
            x_train=a["x_train"][:1500], y_train=a["y_train"][:1500],
            x_test=a["x_test"][:500], y_test=a["y_test"][:500],
        )  # fmt: skip
    shrink = {"smoke": {2000: 400}, "mnist_cnn": {6000: 300, 9000: 450, 60000: 1000}}
    for name, subsets in shrink.items():
        text = Path(f"studies/{name}.toml").read_text()
        for big, small in subsets.items():
            text = re.sub(rf"^subset = {big}\b", f"subset = {small}", text, flags=re.M)
        if name == "smoke":
            text = re.sub(r"^trials = 3\b", "trials = 2", text, flags=re.M)
        if any(re.search(rf"^subset = {big}\b", text, flags=re.M) for big in subsets):
            raise ValueError(
                f"studies/{name}.toml must hold the subsets a rehearsal shrinks. "
                f"Received: one of {sorted(subsets)} left as it was"
            )
        (folder / f"{name}.toml").write_text(text)


def _metric(key: str, value: str) -> None:
    print(f"{key}: {value}")
    with open(Path(os.environ["OUT"]) / "metrics.tsv", "a") as f:
        f.write(f"{key}\t{value}\n")


def _load(path: str) -> Any:
    return json.loads(Path(path).read_text())


def report_env() -> None:
    """What the steps will run on: versions, the device, and no TensorFlow."""
    import importlib.util

    import tuning.cli  # noqa: F401  the project, as the steps run it
    from tuning import backend
    from tuning.device import detect

    for name in ("keras", "keras-tuner", "optuna", "numpy", "scipy", "scikit-learn", "ml-dtypes"):
        print(f"{name} {metadata.version(name)}")
    print("Keras backend:", backend.name(), backend.versions())
    print("tensorflow importable:", importlib.util.find_spec("tensorflow") is not None)
    _metric("device", detect().describe())
    if backend.name() != "jax" or "tensorflow" in sys.modules:
        raise RuntimeError(
            "The device check runs under JAX without TensorFlow. Received: backend "
            f"{backend.name()}, tensorflow imported: {'tensorflow' in sys.modules}"
        )


def report_backends(path: str) -> None:
    for name, s in _load(path)["summary"].items():
        peak = "-" if s["peak_gpu_mib"] is None else f"{s['peak_gpu_mib']:.0f} MiB"
        _metric(f"img_s {name}", f"{s['img_s']['median']:.0f} img/s, peak GPU {peak}")


def report_study(name: str) -> None:
    """The smoke study's trial states, or the default study's seed trial and its time."""
    import collections

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=os.environ["TUNING_STORAGE"])
    if name == "smoke":
        states = collections.Counter(t.state.name.lower() for t in study.trials)
        _metric("smoke study", f"{dict(states)}, best {study.best_value:.4f}")
        return
    trial = study.trials[0]
    assert trial.datetime_complete is not None and trial.datetime_start is not None
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    value = "-" if trial.value is None else f"{trial.value:.4f}"
    _metric("seed trial", f"{seconds:.1f} s, {trial.state.name}, CV accuracy {value}")


def report_export(path: str) -> None:
    from tuning.model.card import ExportCard, ModelCard

    card = ModelCard.read(Path(path).parent / "model.keras")
    assert isinstance(card, ExportCard) and card.test and card.training
    test = card.test
    _metric(
        "export",
        f"test accuracy {test.accuracy} ({test.errors} errors in {test.images}), trained "
        f"{card.training.seconds} s, formats {', '.join(card.formats)}",
    )


def report_workers(path: str) -> None:
    rows = _load(path)["layouts"]
    _metric("workers", "; ".join(
        f"{r['workers']} x {r['threads_per_worker']}: {r['trials_per_hour']}/h "
        f"({r['complete_trials']} done, {r['failed_trials']} failed)" for r in rows
    ))  # fmt: skip
