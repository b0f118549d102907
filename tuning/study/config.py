"""Parse and validate a study file (TOML) into a typed, frozen `StudySpec`, by the rules on its
records' fields (`tuning.typed_json`): one validator for study files, cards and recipes."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuning.errors import ConfigError
from tuning.images.dataset import DataSource, resolve_source
from tuning.model.formats import DEFAULT_FORMATS, FORMATS
from tuning.protocol import FOLDS, SUBSET, Protocol, Rung
from tuning.study.objective_config import (
    PICK_EXPECTED,
    ObjectiveSettings,
    check_objective,
    is_pick_rule,
)
from tuning.typed_json import RecordError, from_json, one_of, rule

SAMPLERS = ("tpe", "random")
# Pruners that decide which trials climb the fidelity rungs (`tuning.study.rungs`). Left out,
# a study of one direction takes successive halving, one of two the dominance stop (`DOMINANCE`).
PRUNERS = ("successive_halving", "hyperband", "median", "none")
DOMINANCE = "dominance"
MEMBER_KINDS = ("seeds", "top")  # [export] members: seeds of the chosen trial, or top trials
MAX_SEEDS = 50
# Keras dtype policies a model can be built with. mixed_bfloat16 (bfloat16 compute, float32
# weights) needs a CPU with AVX512-BF16 or AMX to be fast; mixed_float16 a GPU with tensor cores.
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
# A study file may also say "auto": tuning.device.resolve_precision picks by hardware, once, when
# the study is created, and the stored protocol keeps what it picked.
PRECISIONS = (*POLICIES, "auto")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HYPERMODEL = re.compile(r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Fidelity:
    """How much each trial costs: its rungs (`[[fidelity.rungs]]`, or a single rung given by
    `subset` and `folds`), the most epochs a recipe may ask for, and the compute precision
    (`mixed_bfloat16`: bfloat16 compute, float32 weights; `auto`: chosen by hardware when the
    study is created)."""

    # None: every training image (MNIST: 60,000)
    subset: int | None = field(default=None, metadata=SUBSET)
    folds: int = field(default=5, metadata=FOLDS)
    max_epochs: int = field(
        default=15, metadata=rule(lambda v: 1 <= v <= 200, "an integer in 1..200")
    )
    precision: str = field(default="float32", metadata=one_of(PRECISIONS))
    rungs: tuple[Rung, ...] = field(
        default=(),
        metadata=rule(lambda v: 1 <= len(v) <= 5, "an array of 1 to 5 [[fidelity.rungs]]"),
    )

    @property
    def ladder(self) -> tuple[Rung, ...]:
        """The rungs a trial climbs, cheapest first."""
        return self.rungs or (Rung(self.subset, self.folds),)

    def for_images(self, count: int) -> Fidelity:
        """The same fidelity with "every image" spelled out as `count`, as protocols store it."""
        rungs = tuple(
            dataclasses.replace(rung, subset=count if rung.subset is None else rung.subset)
            for rung in self.rungs
        )
        return dataclasses.replace(self, subset=self.subset or count, rungs=rungs)


@dataclass(frozen=True)
class Search:
    """Which Optuna sampler and pruner drive the study (`pruner` None: the default for its
    directions, `StudySpec.pruner`)."""

    sampler: str = field(default="tpe", metadata=one_of(SAMPLERS))
    pruner: str | None = field(default=None, metadata=one_of(PRUNERS))
    n_startup_trials: int = field(default=10, metadata=rule(lambda v: v >= 0, "an integer >= 0"))


@dataclass(frozen=True)
class Budget:
    """When `tuning study` stops by itself: after `trials` trials or `timeout` seconds."""

    trials: int = field(default=50, metadata=rule(lambda v: v >= 1, "an integer >= 1"))
    timeout: float | None = field(
        default=None, metadata=rule(lambda v: v > 0, "a number of seconds > 0")
    )


@dataclass(frozen=True)
class StorageSettings:
    """How long a worker waits for a lost database (a restart, a failover) before it gives up."""

    retry_minutes: float = field(
        default=10.0, metadata=rule(lambda v: 0 < v <= 1440, "a number of minutes in (0, 1440]")
    )


@dataclass(frozen=True)
class ExportSettings:
    """What `tuning export` changes about the winning trial's recipe besides the data (all
    training images instead of a fold): its epochs are multiplied by `epoch_scale`. It ships
    `seeds` networks (more than one: an ensemble averaging their outputs), trained with the
    seeds `study.seed`, `study.seed + 1`, ...: of the chosen trial (`members = "seeds"`), or
    one of each of the best distinct trials at the top rung (`members = "top"`)."""

    epoch_scale: float = field(
        default=1.0, metadata=rule(lambda v: 0 < v <= 20, "a number in (0, 20]")
    )
    seeds: int = field(
        default=1, metadata=rule(lambda v: 1 <= v <= MAX_SEEDS, f"an integer in [1, {MAX_SEEDS}]")
    )
    members: str = field(default="seeds", metadata=one_of(MEMBER_KINDS))
    # Test errors by which the shipped model may trail the baseline network and still be called
    # no worse: the paired interval's bound must be within it (`tuning.model.tradeoff`).
    margin: int = field(default=10, metadata=rule(lambda v: v >= 0, "an integer >= 0"))
    # Which trial export takes when none is named (`tuning.study.objective_config.PickRule`).
    pick: str = field(default="best", metadata=rule(is_pick_rule, PICK_EXPECTED))
    # The files shipped (`tuning.model.formats`): model.keras always, the others if listed.
    formats: tuple[str, ...] = field(
        default=DEFAULT_FORMATS,
        metadata=rule(
            lambda v: len(set(v)) == len(v) and set(v) <= set(FORMATS),
            f"a list of distinct formats from: {', '.join(FORMATS)}",
        ),
    )


@dataclass(frozen=True)
class DataSettings:
    """What a study trains on (`[data]`): `source` is "mnist", or a `.npz` in the Keras layout or
    an image folder, relative to the study file; `class_names` names a `.npz`'s labels or picks
    an image folder's classes."""

    source: str = field(
        default="mnist",
        metadata=rule(lambda v: v.strip(), '"mnist", or the path of a .npz or folder'),
    )
    class_names: tuple[str, ...] | None = field(
        default=None,
        metadata=rule(
            lambda v: len(v) >= 2 and all(v) and len(set(v)) == len(v),
            "a list of at least 2 distinct class names",
        ),
    )


@dataclass(frozen=True)
class SpaceSettings:
    """What a study tries (`[space]`): `hypermodel` is "module:Name" or "file.py:Name" (relative
    to the study file), a KerasTuner HyperModel or a `build(hp)` function; None: the built-in
    CNN space (`tuning.study.space.CNNHyperModel`)."""

    hypermodel: str | None = field(
        default=None,
        metadata=rule(
            _HYPERMODEL.match,
            '"module.path:Name" or "file.py:Name" (a HyperModel class or a build(hp) function)',
        ),
    )


@dataclass(frozen=True)
class StudyTable:
    """The `[study]` table: `name` defaults to the file's stem; each `[[study.enqueue]]` table
    is a starting point, hyperparameters over the seed network's."""

    name: str | None = field(
        default=None, metadata=rule(_NAME.match, "letters, digits, '_', '.' or '-'")
    )
    seed: int = field(default=42, metadata=rule(lambda v: v >= 0, "an integer >= 0"))
    enqueue_seed: bool = True
    enqueue: tuple[dict[str, Any], ...] = field(
        default=(),
        metadata=rule(
            lambda v: True, "an array of [[study.enqueue]] tables of hyperparameter values"
        ),
    )


@dataclass(frozen=True)
class StudyFile:
    """A study file's tables, as written."""

    study: StudyTable = StudyTable()
    data: DataSettings = DataSettings()
    space: SpaceSettings = SpaceSettings()
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    fidelity: Fidelity = Fidelity()
    search: Search = Search()
    budget: Budget = Budget()
    export: ExportSettings = ExportSettings()
    storage: StorageSettings = StorageSettings()


@dataclass(frozen=True)
class StudySpec:
    """A validated study file. `name` defaults to the file's stem."""

    name: str
    path: Path
    seed: int
    enqueue_seed: bool
    # Starting points from [[study.enqueue]]: hyperparameters over the seed network's, each run
    # once, right after the baseline, when the study is created. The pruner treats them as any
    # other trial.
    enqueue: tuple[dict[str, Any], ...]
    fidelity: Fidelity
    search: Search
    budget: Budget
    export: ExportSettings
    data: DataSettings
    space: SpaceSettings
    storage: StorageSettings = StorageSettings()
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)

    @property
    def pruner(self) -> str:
        """What stops trials between rungs: `[search] pruner`, or by default successive halving
        for one direction and the dominance stop (`tuning.study.rungs`) for two."""
        if self.search.pruner is not None:
            return self.search.pruner
        return DOMINANCE if len(self.objective.directions) > 1 else "successive_halving"

    def for_images(self, count: int) -> StudySpec:
        """The spec with its subsets resolved against `count` training images."""
        return dataclasses.replace(self, fidelity=self.fidelity.for_images(count))

    def protocol(
        self, *, precision: str, backend: str, data_sha256: str, space_fingerprint: str
    ) -> Protocol:
        """The protocol of this study file's trials in `precision` (what "auto" became) under the
        Keras `backend`, on the data of `data_sha256`, over the space of `space_fingerprint`."""
        return Protocol(
            rungs=self.fidelity.ladder,
            max_epochs=self.fidelity.max_epochs,
            seed=self.seed,
            precision=precision,
            backend=backend,
            hypermodel=self.space.hypermodel,
            class_names=self.data.class_names,
            objective=self.objective.stored,
            data_sha256=data_sha256,
            space_fingerprint=space_fingerprint,
        )

    def data_source(self, override: str | Path | None = None) -> DataSource:
        """Where `[data] source` points (relative to the study file), or `override` (a path
        given on the command line) in its place."""
        return resolve_source(self.data.source, base=self.path.parent, override=override)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration, with defaults filled in (saved next to artifacts)."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out


# Keys of the [export] table before its recipe became the trial's own (tuned) recipe.
_FORMER_EXPORT_KEYS = ("epochs", "schedule", "augment", "rotation", "shift", "zoom")


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file; what it leaves out takes the dataclasses' defaults.

    Raises:
        ConfigError: the file is missing, is not TOML, or has unknown keys or bad values.
    """
    path = Path(path)
    raw = _read_toml(path)
    _refuse_former_shapes(path, raw)
    try:
        tables = from_json(StudyFile, raw, strict=True)
    except RecordError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    name = tables.study.name or path.stem
    if not _NAME.match(name):
        raise ConfigError(
            f"{path}: 'study.name' defaults to the file name, which must be "
            f"letters, digits, '_', '.' or '-'. Received: {name!r}"
        )
    fidelity = tables.fidelity
    for index, rung in enumerate(fidelity.rungs):
        _check_rung_size(path, f"fidelity.rungs[{index}]", rung)
    if not fidelity.rungs:
        _check_rung_size(path, "fidelity", fidelity.ladder[0])
    check_objective(path, tables.objective, tables.search.pruner)
    return StudySpec(
        name=name,
        path=path,
        seed=tables.study.seed,
        enqueue_seed=tables.study.enqueue_seed,
        enqueue=tables.study.enqueue,
        fidelity=fidelity,
        search=tables.search,
        budget=tables.budget,
        export=tables.export,
        data=tables.data,
        space=tables.space,
        storage=tables.storage,
        objective=tables.objective,
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: study file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read study file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _refuse_former_shapes(path: Path, raw: dict[str, Any]) -> None:
    """Refuse what earlier study files could say and this one cannot, saying what it is now;
    a rung without `subset` takes every image (a stored `Rung` always names its subset)."""
    export, fidelity = raw.get("export"), raw.get("fidelity")
    former = [k for k in _FORMER_EXPORT_KEYS if isinstance(export, dict) and k in export]
    if former:
        raise ConfigError(
            f"{path}: 'export.{former[0]}' is now part of each trial's tuned recipe; the [export] "
            "table takes 'epoch_scale' (export epochs = the trial's epochs x epoch_scale), 'seeds' "
            "and 'members'"
        )
    if not isinstance(fidelity, dict) or not isinstance(fidelity.get("rungs"), list):
        return
    both = sorted({"subset", "folds"} & set(fidelity))
    if both:
        raise ConfigError(
            f"{path}: give either 'fidelity.{both[0]}' (one rung) or [[fidelity.rungs]], not both"
        )
    fidelity["rungs"] = [
        {"subset": None, **r} if isinstance(r, dict) else r for r in fidelity["rungs"]
    ]


def _check_rung_size(path: Path, where: str, rung: Rung) -> None:
    if rung.subset is not None and rung.subset < 10 * rung.folds:
        raise ConfigError(
            f"{path}: '{where}.subset' must hold at least 10 images per fold "
            f"(folds={rung.folds}). Received: {rung.subset}"
        )
    if rung.folds_run > rung.folds:
        raise ConfigError(
            f"{path}: '{where}.run_folds' must be at most its folds ({rung.folds}). "
            f"Received: {rung.run_folds}"
        )
