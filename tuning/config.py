"""Parse and validate a study file (TOML) into a typed, frozen `StudySpec`."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuning.errors import ConfigError

SAMPLERS = ("tpe", "random")
SCHEDULES = ("cosine", "constant")
PRUNERS = ("hyperband", "median", "wilcoxon", "none")
# Keras dtype policies a model can be built with. mixed_bfloat16 (bfloat16 compute, float32
# weights) needs a CPU with AVX512-BF16 or AMX to be fast; mixed_float16 a GPU with tensor cores.
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
# A study file may also say "auto": tuning.device.resolve_precision picks by hardware, once, when
# the study is created, and the stored protocol keeps what it picked.
PRECISIONS = (*POLICIES, "auto")
MNIST_TRAIN_SIZE = 60_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Fidelity:
    """How much each trial costs: images scored by CV, number of folds, most epochs per fold,
    and the compute precision (`mixed_bfloat16`: bfloat16 compute, float32 weights; `auto`:
    chosen by hardware when the study is created)."""

    subset: int = MNIST_TRAIN_SIZE
    folds: int = 5
    max_epochs: int = 10
    precision: str = "float32"


@dataclass(frozen=True)
class Search:
    """Which Optuna sampler and pruner drive the study."""

    sampler: str = "tpe"
    pruner: str = "hyperband"
    n_startup_trials: int = 10


@dataclass(frozen=True)
class Budget:
    """When `tuning study` stops by itself: after `trials` trials or `timeout` seconds."""

    trials: int = 50
    timeout: float | None = None


@dataclass(frozen=True)
class ExportSettings:
    """How `tuning export` retrains the best trial on all training images (not part of the CV
    protocol, so changing it never invalidates a stored study).

    `epochs` replaces the trial's epochs; `schedule` decays the trial's learning rate per epoch;
    `augment` turns on random rotations (degrees), shifts and zooms (fractions) during training.
    """

    epochs: int = 15
    schedule: str = "cosine"
    augment: bool = True
    rotation: float = 10.0
    shift: float = 0.1
    zoom: float = 0.1


@dataclass(frozen=True)
class StudySpec:
    """A validated study file. `name` defaults to the file's stem."""

    name: str
    path: Path
    seed: int = 42
    enqueue_seed: bool = True
    fidelity: Fidelity = Fidelity()
    search: Search = Search()
    budget: Budget = Budget()
    export: ExportSettings = ExportSettings()

    def protocol(self) -> dict[str, Any]:
        """What every trial's score depends on; a stored study must match it to be resumed.

        Keys added after studies were first stored have their old behaviour as the default in
        `PROTOCOL_DEFAULTS`: compare through `resumable_protocol`, which fills them in.
        """
        return {
            "subset": self.fidelity.subset,
            "folds": self.fidelity.folds,
            "max_epochs": self.fidelity.max_epochs,
            "seed": self.seed,
            "precision": self.fidelity.precision,
        }

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration, with defaults filled in (saved next to artifacts)."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out


# Protocol keys newer than some stored studies, and what those studies implicitly used.
PROTOCOL_DEFAULTS: dict[str, Any] = {"precision": "float32"}


def resumable_protocol(protocol: dict[str, Any]) -> dict[str, Any]:
    """`protocol` with the keys it predates filled in, so an old study and a new file compare."""
    return {**PROTOCOL_DEFAULTS, **protocol}


# key -> (python types accepted, check, what was expected)
_Rule = tuple[tuple[type, ...], Any, str]
_SCHEMA: dict[str, dict[str, _Rule]] = {
    "study": {
        "name": ((str,), lambda v: bool(_NAME.match(v)), "letters, digits, '_', '.' or '-'"),
        "seed": ((int,), lambda v: v >= 0, "an integer >= 0"),
        "enqueue_seed": ((bool,), lambda v: True, "true or false"),
    },
    "fidelity": {
        "subset": ((int,), lambda v: 100 <= v <= MNIST_TRAIN_SIZE, "an integer in 100..60000"),
        "folds": ((int,), lambda v: 2 <= v <= 20, "an integer in 2..20"),
        "max_epochs": ((int,), lambda v: 1 <= v <= 200, "an integer in 1..200"),
        "precision": ((str,), lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
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
        "epochs": ((int,), lambda v: 1 <= v <= 500, "an integer in 1..500"),
        "schedule": ((str,), lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
        "augment": ((bool,), lambda v: True, "true or false"),
        "rotation": ((int, float), lambda v: 0 <= v <= 45, "degrees in 0..45"),
        "shift": ((int, float), lambda v: 0 <= v <= 0.3, "a fraction in 0..0.3"),
        "zoom": ((int, float), lambda v: 0 <= v <= 0.3, "a fraction in 0..0.3"),
    },
}


def _check_table(path: Path, section: str, table: Any) -> dict[str, Any]:
    rules = _SCHEMA[section]
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table. Received: {table!r}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in rules:
            raise ConfigError(
                f"{path}: unknown key '{section}.{key}'; expected one of: {', '.join(rules)}"
            )
        types, check, expected = rules[key]
        # bool is an int in Python; a flag is never a count.
        bad_type = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if bad_type or not check(value):
            raise ConfigError(f"{path}: '{section}.{key}' must be {expected}. Received: {value!r}")
        values[key] = value
    return values


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file.

    Raises:
        ConfigError: the file is missing, is not TOML, or has unknown keys or bad values.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: study file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read study file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None

    unknown = sorted(set(raw) - set(_SCHEMA))
    if unknown:
        raise ConfigError(
            f"{path}: unknown table or key '{unknown[0]}'; expected tables: {', '.join(_SCHEMA)}"
        )
    tables = {section: _check_table(path, section, raw.get(section, {})) for section in _SCHEMA}
    study = tables["study"]
    spec = StudySpec(
        name=study.get("name", path.stem),
        path=path,
        seed=study.get("seed", 42),
        enqueue_seed=study.get("enqueue_seed", True),
        fidelity=Fidelity(**tables["fidelity"]),
        search=Search(**tables["search"]),
        budget=Budget(**tables["budget"]),
        export=ExportSettings(**tables["export"]),
    )
    if spec.fidelity.subset < 10 * spec.fidelity.folds:
        raise ConfigError(
            f"{path}: 'fidelity.subset' must hold at least 10 images per fold "
            f"(folds={spec.fidelity.folds}). Received: {spec.fidelity.subset}"
        )
    if not _NAME.match(spec.name):
        raise ConfigError(
            f"{path}: 'study.name' defaults to the file name, which must be "
            f"letters, digits, '_', '.' or '-'. Received: {spec.name!r}"
        )
    return spec
