"""When a kept export member (`member.json` beside its network) is reused, and when it is
trained again: real files and a real SQLite study, an untrained network, nothing trained."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.helpers import SMOKE
from tuning.export.members import (
    MEMBER_FILE,
    MemberRecord,
    members_dir,
    pending_members,
    train_members,
)
from tuning.export.plan import ExportPlan, plan_export
from tuning.export.retrain import MODEL_FILE
from tuning.hp import OptunaHyperParameters
from tuning.images.mnist import file_sha256
from tuning.model.predictions import PREDICTIONS_FILE, TestPredictions
from tuning.study.config import load_spec
from tuning.study.create import open_study
from tuning.study.rungs import rung_step
from tuning.typed_json import to_json, write_json


@pytest.fixture(scope="module")
def stored_plan(tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path) -> ExportPlan:
    """The plan of a 2-seed export of the smoke study's seed network (trial 0), which finished
    its rung without training: its hyperparameters drawn by building it, its score told."""
    root = tmp_path_factory.mktemp("members")
    storage = f"sqlite:///{root / 'studies.db'}"
    spec = load_spec(SMOKE)
    study, hypermodel = open_study(spec, storage=storage, data_sha256=file_sha256(mnist_npz))
    trial = study.ask()
    hypermodel.build(OptunaHyperParameters(trial))
    trial.report(0.9, step=rung_step(0))
    study.tell(trial, 0.9)
    keras.backend.clear_session()
    out = root / "models" / "smoke"
    return plan_export(spec, storage=storage, data=mnist_npz, out=out, trial=0, seeds=2)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained network saved as a member's model file."""
    path = tmp_path_factory.mktemp("network") / MODEL_FILE
    layers = [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    keras.Sequential(layers).save(path)
    return path


def keep(plan: ExportPlan, network: Path, seed: int) -> Path:
    """Member `seed` of `plan` as an earlier export left it: network, test predictions, record."""
    assert plan.test is not None and plan.test_sha256 is not None
    folder = members_dir(plan.out_dir, plan.spec.name) / f"trial{plan.trial.number}-seed{seed}"
    folder.mkdir(parents=True)
    shutil.copy(network, folder / MODEL_FILE)
    labels = np.asarray(plan.test.y, np.int64)
    probabilities = np.eye(10)[labels]
    probabilities[:3] = np.roll(probabilities[:3], 1, axis=1)  # three wrong
    TestPredictions(labels, probabilities, plan.test_sha256).save(folder)
    record = MemberRecord(
        trial=plan.trial.number,
        seed=seed,
        params=dict(plan.trial.params),
        epoch_scale=plan.settings.epoch_scale,
        data_sha256=plan.train.sha256,
        test_sha256=plan.test_sha256,
        test_errors=3,
        recipe=None,
        curves={"loss": [0.5]},
        seconds=1.5,
        param_count=7850,
    )
    write_json(folder / MEMBER_FILE, to_json(record))
    return folder


@pytest.fixture
def plan(stored_plan: ExportPlan, network: Path, tmp_path: Path) -> ExportPlan:
    """`stored_plan` exported to a folder of this test's, with both seeds (42, 43) kept."""
    plan = dataclasses.replace(stored_plan, out_dir=tmp_path / "models" / "smoke")
    for seed in (42, 43):
        keep(plan, network, seed)
    return plan


def test_members_made_as_the_export_would_make_them_now_are_reused(plan: ExportPlan) -> None:
    pending, kept = pending_members(plan)
    assert (pending, kept) == ([], 2)
    said: list[str] = []
    members = train_members(plan, say=said.append, on_epoch=None)
    cache = members_dir(plan.out_dir, "smoke")
    assert [m.path for m in members] == [cache / f"trial0-seed{s}" / MODEL_FILE for s in (42, 43)]
    assert [(m.record.seed, m.record.test_errors, m.record.seconds) for m in members] == [
        (42, 3, 1.5),
        (43, 3, 1.5),
    ]
    assert [m.predictions.errors for m in members if m.predictions] == [3, 3]
    assert said == [
        f"member {i}/2: trial #0, seed {s}, kept from {cache}/trial0-seed{s} (3 test errors)"
        for i, s in ((1, 42), (2, 43))
    ]


@pytest.mark.parametrize(
    "case",
    [
        "another trial",
        "another seed",
        "other hyperparameters",
        "another epoch scale",
        "other training data",
        "other test images",
        "unreadable record",
        "no network",
        "no test predictions",
        "killed while training",
    ],
)
def test_a_member_made_otherwise_or_left_unfinished_is_trained_again(
    plan: ExportPlan, case: str
) -> None:
    folder = members_dir(plan.out_dir, "smoke") / "trial0-seed43"
    record = (folder / MEMBER_FILE).read_text()
    changes = {
        "another trial": ('"trial": 0', '"trial": 1'),
        "another seed": ('"seed": 43', '"seed": 44'),
        "other hyperparameters": ('"dropout": 0.0', '"dropout": 0.25'),
        "another epoch scale": ('"epoch_scale": 1.0', '"epoch_scale": 2.0'),
        "other training data": (plan.train.sha256, "0" * 64),
        "other test images": (str(plan.test_sha256), "0" * 64),
    }
    if case in changes:
        old, new = changes[case]
        assert old in record
        (folder / MEMBER_FILE).write_text(record.replace(old, new))
    elif case == "unreadable record":
        (folder / MEMBER_FILE).write_text(record[:40])
    elif case == "no network":
        (folder / MODEL_FILE).unlink()
    elif case == "no test predictions":
        (folder / PREDICTIONS_FILE).unlink()
    else:  # a member is trained in `<folder>.partial` and renamed when whole
        folder.rename(folder.with_name(folder.name + ".partial"))
    pending, kept = pending_members(plan)
    assert [(trial.number, seed) for trial, seed in pending] == [(0, 43)]
    assert kept == 1
