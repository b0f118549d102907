"""Parse and validate a study file (TOML) into a typed, frozen `StudySpec`."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuning.errors import ConfigError
from tuning.images.dataset import DataSource, resolve_source
from tuning.protocol import Protocol, Rung

SAMPLERS = ("tpe", "random")
# Pruners that decide which trials climb the fidelity rungs (`tuning.study.rungs`).
PRUNERS = ("successive_halving", "hyperband", "median", "none")
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

    subset: int | None = None  # None: every training image (MNIST: 60,000)
    folds: int = 5
    max_epochs: int = 15
    precision: str = "float32"
    rungs: tuple[Rung, ...] = ()

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
    """Which Optuna sampler and pruner drive the study."""

    sampler: str = "tpe"
    pruner: str = "successive_halving"
    n_startup_trials: int = 10


@dataclass(frozen=True)
class Budget:
    """When `tuning study` stops by itself: after `trials` trials or `timeout` seconds."""

    trials: int = 50
    timeout: float | None = None


@dataclass(frozen=True)
class ExportSettings:
    """What `tuning export` changes about the winning trial's recipe besides the data (all
    training images instead of a fold): its epochs are multiplied by `epoch_scale`. It ships
    `seeds` networks (more than one: an ensemble averaging their outputs), trained with the
    seeds `study.seed`, `study.seed + 1`, ...: of the chosen trial (`members = "seeds"`), or
    one of each of the best distinct trials at the top rung (`members = "top"`)."""

    epoch_scale: float = 1.0
    seeds: int = 1
    members: str = "seeds"


@dataclass(frozen=True)
class DataSettings:
    """What a study trains on (`[data]`): `source` is "mnist", or a `.npz` in the Keras layout or
    an image folder, relative to the study file; `class_names` names a `.npz`'s labels or picks
    an image folder's classes."""

    source: str = "mnist"
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SpaceSettings:
    """What a study tries (`[space]`): `hypermodel` is "module:Name" or "file.py:Name" (relative
    to the study file), a KerasTuner HyperModel or a `build(hp)` function; None: the built-in
    CNN space (`tuning.study.space.CNNHyperModel`)."""

    hypermodel: str | None = None


@dataclass(frozen=True)
class StudySpec:
    """A validated study file. `name` defaults to the file's stem."""

    name: str
    path: Path
    seed: int = 42
    enqueue_seed: bool = True
    # Starting points from [[study.enqueue]]: hyperparameters over the seed network's, each run
    # once, right after the baseline, when the study is created. The pruner treats them as any
    # other trial.
    enqueue: tuple[dict[str, Any], ...] = ()
    fidelity: Fidelity = Fidelity()
    search: Search = Search()
    budget: Budget = Budget()
    export: ExportSettings = ExportSettings()
    data: DataSettings = DataSettings()
    space: SpaceSettings = SpaceSettings()

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


# key -> (python types accepted, check, what was expected)
_Rule = tuple[tuple[type, ...], Any, str]
_SCHEMA: dict[str, dict[str, _Rule]] = {
    "study": {
        "name": ((str,), lambda v: bool(_NAME.match(v)), "letters, digits, '_', '.' or '-'"),
        "seed": ((int,), lambda v: v >= 0, "an integer >= 0"),
        "enqueue_seed": ((bool,), lambda v: True, "true or false"),
        "enqueue": (
            (list,),
            lambda v: all(isinstance(t, dict) for t in v),
            "an array of [[study.enqueue]] tables of hyperparameter values",
        ),
    },
    "data": {
        "source": ((str,), lambda v: bool(v.strip()), '"mnist", or the path of a .npz or folder'),
        "class_names": (
            (list,),
            lambda v: (
                len(v) >= 2 and all(isinstance(n, str) and n for n in v) and len(set(v)) == len(v)
            ),
            "a list of at least 2 distinct class names",
        ),
    },
    "space": {
        "hypermodel": (
            (str,),
            lambda v: bool(_HYPERMODEL.match(v)),
            '"module.path:Name" or "file.py:Name" (a HyperModel class or a build(hp) function)',
        ),
    },
    "fidelity": {
        "subset": ((int,), lambda v: v >= 10, "an integer >= 10 (default: every image)"),
        "folds": ((int,), lambda v: 2 <= v <= 20, "an integer in 2..20"),
        "max_epochs": ((int,), lambda v: 1 <= v <= 200, "an integer in 1..200"),
        "precision": ((str,), lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
        "rungs": ((list,), lambda v: 1 <= len(v) <= 5, "an array of 1 to 5 [[fidelity.rungs]]"),
    },
    "fidelity.rungs": {
        "subset": ((int,), lambda v: v >= 10, "an integer >= 10 (default: every image)"),
        "folds": ((int,), lambda v: 2 <= v <= 20, "an integer in 2..20"),
        "run_folds": ((int,), lambda v: 1 <= v <= 20, "an integer in 1..20"),
        "epoch_scale": ((int, float), lambda v: 0 < v <= 10, "a number in (0, 10]"),
    },
    "search": {
        "sampler": ((str,), lambda v: v in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
        "pruner": ((str,), lambda v: v in PRUNERS, f"one of {', '.join(PRUNERS)}"),
        "n_startup_trials": ((int,), lambda v: v >= 0, "an integer >= 0"),
    },
    "budget": {
        "trials": ((int,), lambda v: v >= 1, "an integer >= 1"),
        "timeout": ((int, float), lambda v: v > 0, "a number of seconds > 0"),
    },
    "export": {
        "epoch_scale": ((int, float), lambda v: 0 < v <= 20, "a number in (0, 20]"),
        "seeds": ((int,), lambda v: 1 <= v <= MAX_SEEDS, f"an integer in [1, {MAX_SEEDS}]"),
        "members": ((str,), lambda v: v in MEMBER_KINDS, f"one of {', '.join(MEMBER_KINDS)}"),
    },
}


# Keys of the [export] table before its recipe became the trial's own (tuned) recipe.
_FORMER_EXPORT_KEYS = ("epochs", "schedule", "augment", "rotation", "shift", "zoom")


def _problem(rule: _Rule, value: Any) -> str | None:
    """What `value` must be by `rule`, if it is not (None: it is fine)."""
    types, check, expected = rule
    # bool is an int in Python; a flag is never a count.
    bad_type = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
    return expected if bad_type or not check(value) else None


def export_setting_problem(key: str, value: Any) -> str | None:
    """What `value` must be to stand for `[export] key`, in words, if it is not (None: it is
    fine): the study file's rule, for values given another way (a flag, a parameter)."""
    return _problem(_SCHEMA["export"][key], value)


def _check_table(
    path: Path, section: str, table: Any, *, where: str | None = None
) -> dict[str, Any]:
    rules = _SCHEMA[section]
    where = where or section
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{where}] must be a table. Received: {table!r}")
    former = [k for k in table if section == "export" and k in _FORMER_EXPORT_KEYS]
    if former:
        raise ConfigError(
            f"{path}: 'export.{former[0]}' is now part of each trial's tuned recipe; the [export] "
            "table takes 'epoch_scale' (export epochs = the trial's epochs x epoch_scale), 'seeds' "
            "and 'members'"
        )
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in rules:
            raise ConfigError(
                f"{path}: unknown key '{where}.{key}'; expected one of: {', '.join(rules)}"
            )
        expected = _problem(rules[key], value)
        if expected:
            raise ConfigError(f"{path}: '{where}.{key}' must be {expected}. Received: {value!r}")
        values[key] = value
    return values


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


def _rung(path: Path, index: int, table: Any) -> Rung:
    where = f"fidelity.rungs[{index}]"
    values = _check_table(path, "fidelity.rungs", table, where=where)
    if "folds" not in values:
        raise ConfigError(f"{path}: '{where}' needs 'folds'. Received: {table!r}")
    rung = Rung(**{"subset": None, **values})
    _check_rung_size(path, where, rung)
    return rung


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file; what it leaves out takes the dataclasses' defaults.

    Raises:
        ConfigError: the file is missing, is not TOML, or has unknown keys or bad values.
    """
    path = Path(path)
    tables = _read_tables(path)
    study = tables["study"]
    data = tables["data"]
    if "class_names" in data:
        data["class_names"] = tuple(data["class_names"])
    name = study.pop("name", path.stem)
    if "enqueue" in study:
        study["enqueue"] = tuple(study["enqueue"])
    if not _NAME.match(name):
        raise ConfigError(
            f"{path}: 'study.name' defaults to the file name, which must be "
            f"letters, digits, '_', '.' or '-'. Received: {name!r}"
        )
    return StudySpec(
        name=name,
        path=path,
        **study,
        fidelity=_fidelity(path, tables["fidelity"]),
        search=Search(**tables["search"]),
        budget=Budget(**tables["budget"]),
        export=ExportSettings(**tables["export"]),
        data=DataSettings(**data),
        space=SpaceSettings(**tables["space"]),
    )


def _read_tables(path: Path) -> dict[str, dict[str, Any]]:
    """Every table of the study file, checked key by key against `_SCHEMA`."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: study file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read study file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    tables_expected = [t for t in _SCHEMA if "." not in t]
    unknown = sorted(set(raw) - set(tables_expected))
    if unknown:
        raise ConfigError(
            f"{path}: unknown table or key '{unknown[0]}'; expected tables: "
            f"{', '.join(tables_expected)}"
        )
    return {s: _check_table(path, s, raw.get(s, {})) for s in tables_expected}


def _fidelity(path: Path, table: dict[str, Any]) -> Fidelity:
    if "rungs" not in table:
        fidelity = Fidelity(**table)
        _check_rung_size(path, "fidelity", fidelity.ladder[0])
        return fidelity
    both = sorted({"subset", "folds"} & set(table))
    if both:
        raise ConfigError(
            f"{path}: give either 'fidelity.{both[0]}' (one rung) or [[fidelity.rungs]], not both"
        )
    rungs = tuple(_rung(path, i, raw_rung) for i, raw_rung in enumerate(table["rungs"]))
    return Fidelity(**{**table, "rungs": rungs})
