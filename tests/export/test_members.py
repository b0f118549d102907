"""When a kept export member (`member.json` beside its network) is reused, and when it is
trained again, saying why when it was damaged; when a stored baseline export is set beside a
later one: real files and a real SQLite study, an untrained network, nothing trained."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from tests.helpers import SMOKE, untrained_seed_study
from tuning.errors import ModelError
from tuning.export.kept import file_hashes
from tuning.export.members import (
    MEMBER_FILE,
    MemberRecord,
    kept_members,
    members_dir,
    pending_members,
    train_members,
)
from tuning.export.pipeline import ship
from tuning.export.plan import ExportPlan, plan_export
from tuning.export.report import PREDICTIONS_SHA, stored_baseline
from tuning.export.retrain import MODEL_FILE
from tuning.images.mnist import file_sha256
from tuning.model.card import CARD_FILE
from tuning.model.predictions import PREDICTIONS_FILE, TestPredictions
from tuning.records import ExportRecord, StudyKey
from tuning.study.config import load_spec
from tuning.typed_json import to_json, write_json


@pytest.fixture(scope="module")
def stored_plan(tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path) -> ExportPlan:
    """The plan of a 2-seed export of the smoke study's seed network (trial 0), which finished
    its rung without training: its hyperparameters drawn by building it, its score told."""
    root = tmp_path_factory.mktemp("members")
    storage = untrained_seed_study(root, mnist_npz)
    out = root / "models" / "smoke"
    return plan_export(load_spec(SMOKE), storage=storage, data=mnist_npz, out=out, trial=0, seeds=2)


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
        files=file_hashes(folder, [MODEL_FILE, PREDICTIONS_FILE]),
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


def flip_byte(path: Path) -> None:
    """Bit rot: one byte in the middle of `path` changed, its size kept."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    """A write cut short (a full disk, a killed copy): the first half of `path` kept."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "case",
    [
        "another trial",
        "another seed",
        "other hyperparameters",
        "another epoch scale",
        "other training data",
        "other test images",
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
    else:  # a member is trained in `<folder>.partial` and renamed when whole
        folder.rename(folder.with_name(folder.name + ".partial"))
    pending, kept = pending_members(plan)
    assert [(trial.number, seed) for trial, seed in pending] == [(0, 43)]
    assert kept == 1
    assert [k.problem for k in kept_members(plan)] == [None, None]  # nothing to report


DAMAGED = "does not match its recorded sha256 (damaged after it was written)"
# What damaged a kept member, and the start of the reason the export gives for training it again.
DAMAGED_MEMBERS = {
    "truncated network": f"kept file {{folder}}/model.keras {DAMAGED}",
    "a byte of the network flipped": f"kept file {{folder}}/model.keras {DAMAGED}",
    "truncated test predictions": f"kept file {{folder}}/test_predictions.npz {DAMAGED}",
    "a record without sha256": "{folder}/member.json records no sha256 of model.keras (written "
    "by an older version)",
    "no network": "kept file {folder}/model.keras is missing",
    "no test predictions": "kept file {folder}/test_predictions.npz is missing",
    "unreadable record": "kept record {folder}/member.json cannot be read (Unterminated string",
    "a network that does not load": "kept file {folder}/model.keras: not a Keras model (a .keras "
    "file is a zip archive)",
    "errors that do not match": "kept file {folder}/test_predictions.npz makes 3 test errors "
    "where {folder}/member.json records 4",
}


@pytest.mark.parametrize("case", DAMAGED_MEMBERS)
def test_a_damaged_member_is_trained_again_and_the_line_names_the_file(
    plan: ExportPlan, case: str
) -> None:
    """A kept file is trusted only with the sha256 its record took when it was written; one
    damaged since, or one kept by a version that recorded none, is trained again, and the line
    the export says (`member 2/2: trial #0, seed 43: ...; training it again`) says why."""
    folder = members_dir(plan.out_dir, "smoke") / "trial0-seed43"
    record = json.loads((folder / MEMBER_FILE).read_text())
    if case == "truncated network":
        truncate(folder / MODEL_FILE)
    elif case == "a byte of the network flipped":
        flip_byte(folder / MODEL_FILE)
    elif case == "truncated test predictions":
        truncate(folder / PREDICTIONS_FILE)
    elif case == "a record without sha256":
        del record["files"]
        write_json(folder / MEMBER_FILE, record)
    elif case == "no network":
        (folder / MODEL_FILE).unlink()
    elif case == "no test predictions":
        (folder / PREDICTIONS_FILE).unlink()
    elif case == "unreadable record":
        (folder / MEMBER_FILE).write_text(json.dumps(record)[:40])
    elif case == "a network that does not load":  # whole, as recorded, but no Keras model
        (folder / MODEL_FILE).write_text("not a zip archive")
        write_json(folder / MEMBER_FILE, {**record, "files": file_hashes(folder, record["files"])})
    else:
        write_json(folder / MEMBER_FILE, {**record, "test_errors": 4})
    pending, kept = pending_members(plan)
    assert [(trial.number, seed) for trial, seed in pending] == [(0, 43)]
    assert kept == 1
    first, second = kept_members(plan)
    assert first.member is not None and first.problem is None
    assert second.member is None and second.problem is not None
    assert second.problem.startswith(DAMAGED_MEMBERS[case].format(folder=folder))


def test_a_single_member_that_fails_to_load_is_named_not_its_staging_copy(
    plan: ExportPlan, tmp_path: Path
) -> None:
    """`ship` copies a lone member into the export's staging folder: if it cannot be loaded,
    the error names the kept file the user has, not the temporary copy."""
    kept = kept_members(plan)[0].member
    assert kept is not None
    member = dataclasses.replace(kept, path=tmp_path / MODEL_FILE)
    (tmp_path / MODEL_FILE).write_text("not a zip archive")
    staging = tmp_path / ".smoke.abc123.tmp"
    staging.mkdir()
    with pytest.raises(ModelError, match=rf"^{tmp_path}/model\.keras: not a Keras model"):
        ship([member], staging, say=lambda _line: None)


def stored_baseline_export(plan: ExportPlan, folder: Path, **card: Any) -> None:
    """An export of the baseline (trial 0) in `folder`, recorded on the study as a later export
    finds it: its test predictions (3 errors) and a card with `card`'s fields."""
    assert plan.test is not None and plan.test_sha256 is not None
    folder.mkdir(parents=True)
    labels = np.asarray(plan.test.y, np.int64)
    probabilities = np.eye(10)[labels]
    probabilities[:3] = np.roll(probabilities[:3], 1, axis=1)
    TestPredictions(labels, probabilities, plan.test_sha256).save(folder)
    sha256 = {PREDICTIONS_SHA: file_sha256(folder / PREDICTIONS_FILE)}
    (folder / CARD_FILE).write_text(json.dumps({"kind": "export", "sha256": sha256, **card}))
    record = ExportRecord(
        trial=0, test_accuracy=0.994, test_errors=3, test_images=len(labels),
        epoch_scale=plan.settings.epoch_scale, data_sha256=plan.train.sha256, out=str(folder),
        created="2026-12-05T00:00:00+00:00", seeds=plan.settings.seeds,
    )  # fmt: skip
    plan.study.set_user_attr(StudyKey.EXPORTS, {"0": record.to_attr()})


STORED_BASELINES = {
    "whole": None,
    "a byte flipped": f"kept file {{folder}}/test_predictions.npz {DAMAGED}",
    "a card without its sha256": "{folder}/model_card.json records no sha256 of "
    "test_predictions.npz (written by an older version)",
    "no card": "{folder}/model_card.json is missing",
}


@pytest.mark.parametrize("case", STORED_BASELINES)
def test_a_stored_baseline_export_is_set_beside_a_later_one_only_when_whole(
    stored_plan: ExportPlan, tmp_path: Path, case: str
) -> None:
    """A later export reads the baseline's test predictions back instead of exporting it
    again: only with the sha256 its card recorded; otherwise it says why and exports it again."""
    plan = dataclasses.replace(stored_plan, out_dir=tmp_path / "models" / "smoke-trial5")
    assert plan.seed_trial is not None and plan.seed_trial.number == 0
    folder = tmp_path / "models" / "smoke"
    stored_baseline_export(plan, folder, **({"sha256": {}} if "without" in case else {}))
    if case == "a byte flipped":
        flip_byte(folder / PREDICTIONS_FILE)
    elif case == "no card":
        (folder / CARD_FILE).unlink()
    said: list[str] = []
    reference = stored_baseline(plan, say=said.append)
    problem = STORED_BASELINES[case]
    if problem is None:
        assert reference is not None and reference.predictions is not None
        assert reference.predictions.errors == reference.record.test_errors == 3
        assert said == []
    else:
        assert reference is None
        assert said == [
            f"the baseline's export (trial #0): {problem.format(folder=folder)}; exporting it again"
        ]
