"""The members an export ships: its trial's recipe trained with several seeds (or the best
distinct trials at the top rung, one seed each), each tested once on the test split.

Every finished member is kept in a hidden folder beside the export (`.<study>.members/`, shared
by all exports of the study to that parent folder) with the record of how it was made, so a
killed or interrupted export resumes without training it again, and a later export with more
seeds or other members trains only the new ones. A member is reused only when its record matches
what the export would train now and its files are whole: each has the sha256 its record took when
it was written (`tuning.export.kept`), its predictions agree with its recorded errors, and its
network loads. A damaged member is trained again, and the export says so, naming the file.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from tuning.export.kept import file_hashes, kept_files_problem
from tuning.export.plan import ExportPlan
from tuning.export.retrain import MODEL_FILE, EpochFn, retrain
from tuning.memory import release_memory
from tuning.model.file import load_model_file
from tuning.model.predictions import PREDICTIONS_FILE, TestPredictions
from tuning.study.rungs import ranked_at_highest_rung
from tuning.training.recipe import Recipe
from tuning.typed_json import RecordError, from_json, read_json, to_json, write_json

MEMBER_FILE = "member.json"


@dataclass(frozen=True)
class MemberRecord:
    """How one member was trained (trial, its params, seed, epoch scale, training data) and how
    it did: its per-epoch `curves`, training `seconds`, and its errors on the test images whose
    sha256 is `test_sha256` (None: the data has no test split); `files`: the sha256 of each
    file kept beside it, by name, taken when it was written (empty in older records)."""

    trial: int
    seed: int
    params: dict[str, Any]
    epoch_scale: float
    data_sha256: str
    test_sha256: str | None
    test_errors: int | None
    recipe: Recipe | None
    curves: dict[str, list[float]]
    seconds: float
    param_count: int
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Member:
    """A trained member: its record, its `model.keras` and its test predictions (None: no test
    split)."""

    record: MemberRecord
    path: Path
    predictions: TestPredictions | None


def members_dir(out_dir: Path, study: str) -> Path:
    """Where the members of `study`'s exports to `out_dir` are kept: a hidden folder beside it."""
    return out_dir.with_name(f".{study}.members")


def member_trials(plan: ExportPlan) -> list[tuple[FrozenTrial, int]]:
    """(trial, seed) of each member: `seeds` seeds of the trial, or with `members = "top"` the
    best distinct trials at the top rung (the chosen trial first), one seed each."""
    seeds, base = plan.settings.seeds, plan.spec.seed
    if plan.settings.members == "top" and not plan.is_baseline:
        others = [
            t for t in ranked_at_highest_rung(plan.study.trials) if t.number != plan.trial.number
        ]
        return [(trial, base) for trial in [plan.trial, *others][:seeds]]
    return [(plan.trial, base + index) for index in range(seeds)]


@dataclass(frozen=True)
class KeptMember:
    """One member of an export, in training order: its trial, seed and folder, the member kept
    there if it can be reused as it is (None: it is to train), and, when a member kept there is
    damaged, why, in words naming the file (`problem`)."""

    trial: FrozenTrial
    seed: int
    folder: Path
    member: Member | None
    problem: str | None = None


def kept_members(plan: ExportPlan) -> list[KeptMember]:
    """Each member of `plan` in training order, with what is kept of it from an earlier run:
    the one walk over the folders that both the estimate and the training read."""
    cache = members_dir(plan.out_dir, plan.spec.name)
    kept = []
    for trial, seed in member_trials(plan):
        folder = cache / f"trial{trial.number}-seed{seed}"
        member, problem = _stored(folder, plan, trial, seed, plan.test_sha256)
        kept.append(KeptMember(trial, seed, folder, member, problem))
    return kept


def pending_members(plan: ExportPlan) -> tuple[list[tuple[FrozenTrial, int]], int]:
    """(trial, seed) of each member `plan` still has to train, in the order `train_members`
    trains them, and how many of its members are kept from an earlier run."""
    kept = kept_members(plan)
    pending = [(k.trial, k.seed) for k in kept if k.member is None]
    return pending, len(kept) - len(pending)


def train_members(
    plan: ExportPlan, *, say: Callable[[str], None], on_epoch: EpochFn | None
) -> list[Member]:
    """Every member of `plan`, from its folder when it is already trained, else trained now."""
    wanted = kept_members(plan)
    if len(wanted) < plan.settings.seeds:
        say(
            f"only {len(wanted)} distinct trials reached the top rung: the ensemble has "
            f"{len(wanted)} members, not {plan.settings.seeds}"
        )
    members = []
    for index, kept in enumerate(wanted):
        which = f"member {index + 1}/{len(wanted)}: trial #{kept.trial.number}, seed {kept.seed}"
        member = kept.member
        if member is not None:
            say(f"{which}, kept from {kept.folder} ({member.record.test_errors} test errors)")
        else:
            if kept.problem is not None:
                say(f"{which}: {kept.problem}; training it again")
            elif len(wanted) > 1:
                say(f"member {index + 1}/{len(wanted)}:")
            member = _train(kept, plan, say=say, on_epoch=on_epoch)
        members.append(member)
    return members


def _stored(
    folder: Path, plan: ExportPlan, trial: FrozenTrial, seed: int, test_sha: str | None
) -> tuple[Member | None, str | None]:
    """The member kept in `folder` if it was trained exactly as `plan` would train it now and
    is whole; else None, with why when a member kept there is damaged (one made otherwise is
    simply trained again)."""
    if not folder.is_dir():
        return None, None
    path = folder / MEMBER_FILE
    try:
        record = from_json(MemberRecord, read_json(path))
    except (OSError, ValueError, RecordError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
        return None, f"kept record {path} cannot be read ({reason or type(exc).__name__})"
    same = (
        record.trial == trial.number
        and record.seed == seed
        and record.params == dict(trial.params)
        and record.epoch_scale == plan.settings.epoch_scale
        and record.data_sha256 == plan.train.sha256
        and record.test_sha256 == test_sha
    )
    if not same:
        return None, None
    problem = kept_files_problem(folder, _files(test_sha), record.files, record=path)
    if problem is not None:
        return None, problem
    predictions = None
    try:
        if test_sha is not None:
            predictions = TestPredictions.load(folder)
        # A file whose sha256 matches loaded when it was written; it may not load under another
        # Keras. Loading it here, not when the ensemble is built, lets the estimate know.
        load_model_file(folder / MODEL_FILE, compile=False)
    except ValueError as exc:  # ModelError: the message names the file
        return None, f"kept file {exc}"
    if predictions is not None and predictions.errors != record.test_errors:
        return None, (
            f"kept file {folder / PREDICTIONS_FILE} makes {predictions.errors} test errors "
            f"where {path} records {record.test_errors}"
        )
    return Member(record, folder / MODEL_FILE, predictions), None


def _files(test_sha: str | None) -> list[str]:
    """The files a member keeps beside its record: its network, and its test predictions."""
    return [MODEL_FILE] if test_sha is None else [MODEL_FILE, PREDICTIONS_FILE]


def _train(
    kept: KeptMember, plan: ExportPlan, *, say: Callable[[str], None], on_epoch: EpochFn | None
) -> Member:
    """Train one member into a fresh folder, test it once, and only then put the folder in
    place: a member folder holds a whole member or is absent."""
    folder, trial, seed, test_sha = kept.folder, kept.trial, kept.seed, plan.test_sha256
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        trained = retrain(plan, partial, trial=trial, seed=seed, say=say, on_epoch=on_epoch)
        predictions = None
        if plan.test is not None and test_sha is not None:
            probabilities = trained.model.predict(plan.test.x, batch_size=500, verbose=0)
            labels = np.asarray(plan.test.y, dtype=np.int64)
            predictions = TestPredictions(labels, np.asarray(probabilities, np.float64), test_sha)
            predictions.save(partial)
        record = MemberRecord(
            trial=trial.number,
            seed=seed,
            params=dict(trial.params),
            epoch_scale=plan.settings.epoch_scale,
            data_sha256=plan.train.sha256,
            test_sha256=test_sha,
            test_errors=predictions.errors if predictions else None,
            recipe=trained.recipe,
            curves=trained.curves,
            seconds=round(trained.seconds, 2),
            param_count=int(trained.model.count_params()),
            files=file_hashes(partial, _files(test_sha)),
        )
        write_json(partial / MEMBER_FILE, to_json(record))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # a failed write (a full disk) frees its space
        raise
    del trained
    release_memory()
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return Member(record, folder / MODEL_FILE, predictions)


def member_errors(members: list[Member]) -> list[int]:
    """The members' test errors, of those tested (all, or none when there is no test split)."""
    return [m.record.test_errors for m in members if m.record.test_errors is not None]


def load_members(members: list[Member]) -> list[Any]:
    """The members' networks, loaded safely from their files without their optimizers (an
    ensemble keeps their weights, not their training state)."""
    return [load_model_file(member.path, compile=False) for member in members]
