"""What an export says it will cost before it trains: the networks, images and epochs, the time
from the trials' own measured speed (or a few timed batches), the cheaper choice past an hour;
the line comes before any training, and the bar only on a terminal."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import optuna
import pytest

from tests.helpers import SMOKE, tiny_study
from tuning.cli import main
from tuning.device import detect
from tuning.export import plan_export
from tuning.export.estimate import (
    FROM_BATCHES,
    FROM_TRIALS,
    ExportEstimate,
    NetworkCost,
    estimate_export,
)
from tuning.export.progress import ExportProgress
from tuning.hp import OptunaHyperParameters
from tuning.images.dataset import load_training
from tuning.records import TrialKey
from tuning.study.config import load_spec
from tuning.study.create import open_study
from tuning.study.rungs import RungRecord, rung_step

# The smoke study's one rung: 2-fold CV on 2,000 images, so a fold trains on 1,000 images and a
# trial's two folds on 2,000 per epoch; its recipes train 1 epoch.
SMOKE_IMAGES = 2000


def _timed_trial(
    study: optuna.Study, score: float, *, seconds: float, device: str | None = None
) -> None:
    """Tell `study` a trial (the next enqueued one, else sampled) that finished its one rung in
    `seconds` of training on `device` (default: this one), written as the objective writes it.
    Its network is built only to declare its parameters; nothing is trained."""
    from tuning.study.space import CNNHyperModel

    trial = study.ask()
    hp = OptunaHyperParameters(trial)
    hypermodel = CNNHyperModel(max_epochs=1)
    hypermodel.build(hp)
    epochs = hypermodel.recipe(hp).epochs
    record = RungRecord(0, score, 0.0, [score, score], epochs, train_seconds=seconds)
    trial.set_user_attr(TrialKey.RUNGS, [record.as_attr()])
    trial.set_user_attr(TrialKey.VERSIONS, {"device": device or detect().describe()})
    trial.report(score, step=rung_step(0))
    study.tell(trial, score)


@pytest.fixture
def timed_study(tmp_path: Path, mnist_npz: Path) -> str:
    """The smoke study's baseline (trial 0) timed at 1 image/s and a better trial 1 at 2
    images/s, on this device; returns the storage."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    images = load_training(load_spec(SMOKE).data_source(mnist_npz))
    study, _ = open_study(load_spec(SMOKE), storage=storage, data_sha256=images.sha256)
    _timed_trial(study, 0.90, seconds=SMOKE_IMAGES / 1.0)  # the enqueued seed network
    _timed_trial(study, 0.95, seconds=SMOKE_IMAGES / 2.0)
    return storage


def _estimate(
    storage: str, data: Path, tmp_path: Path, *, seeds: int, trial: int | None = None
) -> ExportEstimate:
    spec = load_spec(SMOKE)
    out = tmp_path / "m"
    return estimate_export(
        plan_export(spec, storage=storage, data=data, out=out, seeds=seeds, trial=trial)
    )


def test_the_estimate_is_each_trials_measured_speed_over_all_images(
    timed_study: str, mnist_npz: Path, tmp_path: Path
) -> None:
    """3 seeds of the winner and 3 of the baseline, each 1 epoch on the 2,000 images: at 2 and
    1 images/s, 1,000 and 2,000 s each, 2 h 30 min in all, so 1 seed (50 min) is offered."""
    estimate = _estimate(timed_study, mnist_npz, tmp_path, seeds=3)
    assert estimate.images == SMOKE_IMAGES and estimate.kept == 0
    assert [(n.trial, n.seed, n.baseline) for n in estimate.networks] == [
        (0, 42, True), (0, 43, True), (0, 44, True), (1, 42, False), (1, 43, False),
        (1, 44, False),
    ]  # fmt: skip
    assert all(n.epochs == 1 for n in estimate.networks)
    assert [n.seconds for n in estimate.networks] == pytest.approx([2000] * 3 + [1000] * 3)
    assert {n.speed.measured_by for n in estimate.networks if n.speed} == {FROM_TRIALS}
    assert estimate.seconds == pytest.approx(9000)
    assert estimate.cheaper is not None and estimate.cheaper.seeds == 1
    assert estimate.cheaper.seconds == pytest.approx(3000)
    assert estimate.describe() == (
        "6 networks to train on 2,000 images (3 of the baseline trial #0, 1 epoch at 1 img/s; "
        "3 of trial #1, 1 epoch at 2 img/s): about 2 h 30 min here"
    )


def test_no_cheaper_choice_within_the_hour_or_with_one_seed(
    timed_study: str, mnist_npz: Path, tmp_path: Path
) -> None:
    one = _estimate(timed_study, mnist_npz, tmp_path, seeds=1)
    assert one.seconds == pytest.approx(3000) and one.cheaper is None  # 50 min: no choice
    alone = _estimate(timed_study, mnist_npz, tmp_path, seeds=2, trial=0)  # the baseline alone
    assert [n.seed for n in alone.networks] == [42, 43]
    assert alone.seconds == pytest.approx(4000)  # over the hour, so 1 seed is offered
    assert alone.cheaper is not None and alone.cheaper.seeds == 1
    assert alone.cheaper.seconds == pytest.approx(2000)


def test_a_trial_timed_on_another_device_is_timed_here_on_a_few_batches(
    tmp_path: Path, mnist_npz: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    images = load_training(load_spec(SMOKE).data_source(mnist_npz))
    study, _ = open_study(load_spec(SMOKE), storage=storage, data_sha256=images.sha256)
    _timed_trial(study, 0.9, seconds=1.0, device="GPU: a faster one x1")
    plan = plan_export(load_spec(SMOKE), storage=storage, data=mnist_npz, out=tmp_path / "m")
    said: list[str] = []
    (network,) = estimate_export(plan, say=said.append).networks
    assert network.speed is not None and network.speed.measured_by == FROM_BATCHES
    assert said == ["timing a few batches of trial #0: no timing of it from this device"]
    # Not the other device's 2,000 images a second: this CPU's own speed, plausibly.
    assert network.speed.images_per_second != pytest.approx(SMOKE_IMAGES)
    assert 10 < network.speed.images_per_second < 1e6


@dataclasses.dataclass(frozen=True)
class TinyExport:
    study_file: Path
    storage: str
    out: Path
    err: str


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path) -> TinyExport:
    """A 2-trial tiny study, then `tuning export` of it with one seed, its terminal captured
    (not a terminal: a test runs without one)."""
    import contextlib

    from tuning.study.run import run_study

    root = tmp_path_factory.mktemp("tiny_export")
    path = tiny_study(root / "tiny.toml", name="tiny", source=str(mnist_npz), trials=2)
    storage = f"sqlite:///{root / 'studies.db'}"
    run_study(load_spec(path), storage=storage, n_trials=2)
    out = root / "models" / "tiny"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["export", str(path), "--storage", storage, "--out", str(out)])
    assert status == 0, err.getvalue()
    return TinyExport(path, storage, out, err.getvalue())


def test_the_estimate_line_comes_before_any_training(tiny_export: TinyExport) -> None:
    lines = tiny_export.err.splitlines()
    first = next(i for i, line in enumerate(lines) if "network" in line and "to train" in line)
    trained = [i for i, line in enumerate(lines) if line.startswith("retraining trial")]
    assert trained and first < trained[0]
    assert lines[first].endswith(" here") and "on 2,000 images" in lines[first]
    assert " 1 epoch at " in lines[first]


def test_without_a_terminal_there_is_no_bar_but_one_line_per_epoch(
    tiny_export: TinyExport,
) -> None:
    assert "\r" not in tiny_export.err and "export:" not in tiny_export.err
    assert "  epoch 1/1: loss " in tiny_export.err


def test_a_rerun_with_more_seeds_counts_only_the_networks_it_lacks(
    tiny_export: TinyExport, mnist_npz: Path
) -> None:
    spec = load_spec(tiny_export.study_file)
    plan = plan_export(spec, storage=tiny_export.storage, out=tiny_export.out, seeds=2)
    estimate = estimate_export(plan)
    trials = {n.trial for n in estimate.networks}
    assert estimate.kept == len(trials) >= 1  # each trial's seed 3 is kept from the first run
    assert [n.seed for n in estimate.networks] == [4] * len(trials)
    assert f"; {estimate.kept} kept from an earlier run" in estimate.describe()


def test_on_a_terminal_the_bar_covers_every_network_with_its_time_left() -> None:
    networks = tuple(
        NetworkCost(trial, seed, trial == 0, 2, None, 10.0) for trial, seed in ((0, 1), (5, 1))
    )
    screen = io.StringIO()
    progress = ExportProgress(disable=False, file=screen)
    progress.start(ExportEstimate(100, networks, kept=0))
    for _network in networks:
        progress.on_epoch(1, 2, {"loss": 0.5})
        progress.on_epoch(2, 2, {"loss": 0.25})
    progress.write("a line above the bar")
    assert progress.bar is not None and progress.bar.n == pytest.approx(20.0)
    progress.close()
    drawn = screen.getvalue()
    assert "export: 100%" in drawn and "<00:00" in drawn
    assert "network 2/2: trial #5 seed 1, epoch 2/2, loss 0.2500" in drawn
    assert "a line above the bar\n" in drawn
