"""The first step of an export: decide everything before anything is trained. Which trial of
which study, on which training and test images, under which stored protocol, with which
HyperModel, to which folder, and whether the baseline must be exported first. Every input is
checked here, so a bad one fails before a minute of training."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial

from tuning.artifacts import artifact_store
from tuning.errors import ExportError
from tuning.export.selection import (
    baseline_trial,
    check_compatible,
    default_out_dir,
    load_exportable_study,
    trial_out_dir,
)
from tuning.images.dataset import Images, load_images, load_training
from tuning.model.formats import DEFAULT_FORMATS, check_formats
from tuning.model.predictions import test_data_sha256
from tuning.protocol import Protocol
from tuning.publish import Publication
from tuning.reconnect import Reconnect
from tuning.storage import redact, resolve_storage_url
from tuning.study.config import ExportSettings, StudySpec
from tuning.study.objective_config import PickRule
from tuning.study.recipe_hypermodel import RecipeHyperModel
from tuning.study.rungs import highest_rung, rung_scores
from tuning.typed_json import field_problem


@dataclass(frozen=True)
class ExportCommand:
    """How the export was asked for, as `config.json` records it (`trial` and `epoch_scale`
    None: not given), and what chose its trial: "trial=N", "baseline" or the pick rule."""

    storage: str
    data: str
    out: str
    trial: int | None
    epoch_scale_override: float | None
    seeds_override: int | None = None
    members_override: str | None = None
    formats_override: tuple[str, ...] | None = None
    pick_override: str | None = None
    chosen_by: str = "best"


@dataclass(frozen=True)
class ExportPlan:
    """One trial's export, decided: `trial` of `study`, rebuilt by `hypermodel` under `protocol`,
    trained on `train` by its recipe with the epochs of `settings`, tested once on `test` (None:
    the data has none), published to `out_dir`. `seed_trial` is the study's baseline trial and
    `compare` says whether this export is set beside it."""

    spec: StudySpec
    study: optuna.Study
    trial: FrozenTrial
    protocol: Protocol
    hypermodel: RecipeHyperModel
    settings: ExportSettings
    train: Images
    test: Images | None
    out_dir: Path
    store: FileSystemArtifactStore
    command: ExportCommand
    seed_trial: FrozenTrial | None
    compare: bool = True

    @functools.cached_property
    def test_sha256(self) -> str | None:
        """The sha256 of the test images and labels (None: no test split), hashed once."""
        return None if self.test is None else test_data_sha256(self.test.x, self.test.y)

    @property
    def top_rung(self) -> int:
        """The highest rung the trial finished: its CV score there is the one that chose it."""
        return highest_rung(self.trial)

    @property
    def cv_score(self) -> float:
        return rung_scores(self.trial)[self.top_rung]

    @property
    def is_baseline(self) -> bool:
        return self.seed_trial is not None and self.seed_trial.number == self.trial.number

    @property
    def baseline_needed(self) -> bool:
        """Whether the card sets this trial beside another, the baseline, on the test split."""
        return (
            self.compare
            and self.test is not None
            and self.seed_trial is not None
            and not self.is_baseline
        )

    def with_seeds(self, seeds: int) -> ExportPlan:
        """The same export with `seeds` members (of the trial, or top trials), say to price it."""
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, seeds=seeds))

    def for_baseline(self) -> ExportPlan:
        """The plan of the baseline's own export, beside this one and by the same rules."""
        if self.seed_trial is None:
            raise ValueError("the study has no baseline trial")
        out_dir = trial_out_dir(self.spec.name, self.seed_trial.number, beside=self.out_dir)
        command = dataclasses.replace(
            self.command, out=str(out_dir), trial=self.seed_trial.number, chosen_by="baseline"
        )
        return dataclasses.replace(
            self, trial=self.seed_trial, out_dir=out_dir, command=command, compare=False
        )


def plan_export(
    spec: StudySpec,
    *,
    storage: str | None = None,
    data: str | Path | None = None,
    out: str | Path | None = None,
    trial: int | None = None,
    epoch_scale: float | None = None,
    seeds: int | None = None,
    members: str | None = None,
    formats: Sequence[str] | None = None,
    pick: str | None = None,
    compare: bool = True,
    artifacts: str | Path | None = None,
    reconnect: Reconnect | None = None,
) -> ExportPlan:
    """The plan of exporting `trial` of `spec`'s study (default: the one `pick` chooses, by
    default `[export] pick`, the best feasible trial at the highest rung)
    (see `tuning.export.export_study` for the parameters); a lost database is waited for as
    `reconnect` says (default: up to 10 minutes, silently).

    Raises:
        ExportError: no such study or trial, a bad `epoch_scale`, a format that cannot be
            written here, or `out` cannot be written.
        StudyMismatchError: the data or the search space changed since the study ran.
        DataError: the training data is missing or malformed.
    """
    url = resolve_storage_url(storage)
    given = {"epoch_scale": epoch_scale, "seeds": seeds, "members": members, "pick": pick}
    for key, value in given.items():
        expected = None if value is None else field_problem(ExportSettings, key, value)
        if expected:
            raise ExportError(f"must be {expected}. Received: {key}={value!r}", param=key)
    if trial is not None and pick is not None:
        raise ExportError(
            f"give a trial or a rule that picks one, not both. Received: trial={trial}, "
            f"pick={pick!r}",
            param="pick",
        )
    rule = PickRule.parse(pick or spec.export.pick)
    study, chosen = load_exportable_study(spec, url, trial=trial, pick=rule, reconnect=reconnect)
    chosen_formats = _check_formats(spec, formats)  # a missing extra fails before any training
    source = spec.data_source(data)
    train = load_training(source, class_names=spec.data.class_names)
    spec = spec.for_images(len(train.y))
    protocol, hypermodel = check_compatible(study, spec, train)
    if out is not None:
        out_dir = Path(out)
    else:
        out_dir = (
            trial_out_dir(spec.name, trial) if trial is not None else default_out_dir(spec.name)
        )
    store = artifact_store(artifacts)  # an unwritable artifact folder fails before training
    Publication.check_writable(out_dir)  # and so does an unwritable `out`
    settings = ExportSettings(
        epoch_scale=epoch_scale or spec.export.epoch_scale,
        seeds=seeds or spec.export.seeds,
        members=members or spec.export.members,
        pick=pick or spec.export.pick,
        formats=chosen_formats,
    )
    command = ExportCommand(
        redact(url),
        train.source,
        str(out_dir),
        trial,
        epoch_scale,
        seeds,
        members,
        None if formats is None else tuple(formats),
        pick_override=pick,
        chosen_by=f"trial={trial}" if trial is not None else rule.describe(),
    )
    return ExportPlan(
        spec=spec,
        study=study,
        trial=chosen,
        protocol=protocol,
        hypermodel=hypermodel,
        settings=settings,
        train=train,
        test=load_images(source, split="test", class_names=train.class_names),
        out_dir=out_dir,
        store=store,
        command=command,
        seed_trial=baseline_trial(study),
        compare=compare,
    )


def _check_formats(spec: StudySpec, given: Sequence[str] | None) -> tuple[str, ...]:
    """The formats to write: `given` (a parameter), else the study file's `[export] formats`,
    each of them writable here."""
    if given is not None:
        return check_formats(given)
    try:
        return check_formats(spec.export.formats, default=spec.export.formats == DEFAULT_FORMATS)
    except ExportError as exc:
        raise ExportError(f"{spec.path}: 'export.formats': {exc.message}") from None
