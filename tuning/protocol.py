"""What a stored score means: the protocol a study is created with, stored on it, and checked
whenever the study is resumed or exported. `Protocol` is the one record of it: its version, the
defaults of keys added after some studies were stored, and its check; nothing else builds the
stored dict. `check_fields` is the check itself, shared with the transfer study's protocol."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from tuning.errors import StudyMismatchError
from tuning.typed_json import OMIT_NONE, RecordError, from_json, rule, to_json

# Bumped when what a stored score means changes; older studies are refused, not reinterpreted.
# 2: rungs and tuned training recipes (1: one fidelity, an untuned export recipe).
PROTOCOL_VERSION = 2
# What a rung may be, here and in a study file's [fidelity] table.
SUBSET = rule(lambda v: v >= 10, "an integer >= 10 (default: every image)")
FOLDS = rule(lambda v: 2 <= v <= 20, "an integer in 2..20")


@dataclass(frozen=True)
class Rung:
    """One step of the fidelity ladder: k-fold CV on a stratified `subset` of the training
    images, stopping after the first `run_folds` folds (default: all `folds`), with the trial's
    recipe run for `epoch_scale` times its epochs. Its score is the mean over the folds run."""

    subset: int | None = field(metadata=SUBSET)  # None: every training image
    folds: int = field(metadata=FOLDS)
    run_folds: int | None = field(
        default=None, metadata=rule(lambda v: 1 <= v <= 20, "an integer in 1..20")
    )
    epoch_scale: float = field(
        default=1.0, metadata=rule(lambda v: 0 < v <= 10, "a number in (0, 10]")
    )

    @property
    def folds_run(self) -> int:
        return self.run_folds or self.folds

    def describe(self) -> str:
        folds = (
            f"{self.folds}-fold"
            if self.folds_run == self.folds
            else f"{self.folds_run} of {self.folds} folds"
        )
        images = "all" if self.subset is None else f"{self.subset:,}"
        return f"{folds} CV on {images} images, epochs x {self.epoch_scale:g}"


@dataclass(frozen=True)
class Objective:
    """What a study optimises: its `directions`, CV accuracy (maximised) and optionally one
    cost (minimised: the study's result is then a Pareto front), and the `limits` a network's
    costs must meet (a network over one is infeasible). Cost names are
    `tuning.records.COST_NAMES`; the study file's `[objective]` table is checked against them."""

    directions: tuple[str, ...] = ("accuracy",)
    limits: dict[str, float] = field(default_factory=dict)

    @property
    def cost(self) -> str | None:
        """The cost minimised beside accuracy, or None for accuracy alone."""
        return self.directions[1] if len(self.directions) > 1 else None

    def describe(self) -> str:
        """'maximise accuracy', 'maximise accuracy and minimise flops, with params <= 5,000'."""
        aim = "maximise accuracy" + (f" and minimise {self.cost}" if self.cost else "")
        if not self.limits:
            return aim
        return f"{aim}, with " + " and ".join(
            f"{name} <= {format_limit(value)}" for name, value in self.limits.items()
        )


DEFAULT_OBJECTIVE = Objective()


def format_limit(value: float) -> str:
    """A limit as a study file would write it: '4,551,363', '0.5'."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """What every trial's score depends on. A study stores it when it is created; a run resumes
    the study only with the same protocol, and export rebuilds trials only under it.

    `precision` and `backend` default to what studies stored before the keys existed used;
    `hypermodel`, `class_names` and `objective` are stored only when set (`objective`: when it
    is not the default, accuracy alone), so that studies stored before them keep their form."""

    protocol_version: int = PROTOCOL_VERSION
    rungs: tuple[Rung, ...]
    max_epochs: int
    seed: int
    precision: str = "float32"
    backend: str = "tensorflow"  # the Keras backend; studies stored before the key used this
    hypermodel: str | None = field(default=None, metadata=OMIT_NONE)
    class_names: tuple[str, ...] | None = field(default=None, metadata=OMIT_NONE)
    objective: Objective | None = field(default=None, metadata=OMIT_NONE)  # None: the default
    data_sha256: str
    space_fingerprint: str

    def __post_init__(self) -> None:
        if self.objective == DEFAULT_OBJECTIVE:  # one stored form for the default
            object.__setattr__(self, "objective", None)

    @property
    def aim(self) -> Objective:
        """The study's objective (the default, accuracy alone, where none is stored)."""
        return self.objective or DEFAULT_OBJECTIVE

    def to_attr(self) -> dict[str, Any]:
        """The protocol as the study's `protocol` user attribute stores it."""
        return dict(to_json(self))

    @classmethod
    def read(cls, stored: Mapping[str, Any] | None, *, study: str, remedy: str) -> Protocol:
        """The protocol stored on a study.

        Raises:
            StudyMismatchError: it was stored under another protocol version, or is malformed.
        """
        stored = dict(stored or {})
        version = stored.get("protocol_version", 1)
        if version != PROTOCOL_VERSION:
            raise StudyMismatchError(
                f"{study} was stored by an earlier tuning (protocol {version}: one fidelity, "
                f"untuned training recipe), so its scores mean something else now; {remedy}"
            )
        try:
            return from_json(cls, stored)
        except RecordError as exc:
            raise StudyMismatchError(
                f"{study} has a malformed protocol ({exc}); {remedy}"
            ) from None

    def check(
        self,
        stored: Protocol,
        *,
        study: str,
        remedy: str,
        ignore: Collection[str] = (),
        only: Collection[str] | None = None,
    ) -> None:
        """That `stored` is this protocol, key by key (`only` those keys, if given; never those
        in `ignore`).

        Raises:
            StudyMismatchError: one line naming `study`, the first key that differs, the stored
                and the expected values (the objectives in words), and `remedy` (what to do).
        """
        checked = "objective" not in ignore and (only is None or "objective" in only)
        if checked and stored.aim != self.aim:
            raise StudyMismatchError(
                f"{study} was made to {stored.aim.describe()}, but this run asks to "
                f"{self.aim.describe()}; {remedy}"
            )
        check_fields(
            stored.to_attr(),
            self.to_attr(),
            study=study,
            remedy=remedy,
            ignore=(*ignore, "objective"),
            only=only,
        )


def check_fields(
    stored: Mapping[str, Any] | None,
    expected: Mapping[str, Any],
    *,
    study: str,
    remedy: str,
    ignore: Collection[str] = (),
    only: Collection[str] | None = None,
) -> None:
    """That every key of `expected` (but those in `ignore`; only those in `only`, if given) has
    the same value in `stored`.

    Raises:
        StudyMismatchError: one line naming `study`, the first key that differs, both values and
            `remedy`.
    """
    stored = stored or {}
    for key, want in expected.items():
        if key in ignore or (only is not None and key not in only):
            continue
        have = stored.get(key)
        if have != want:
            raise StudyMismatchError(
                f"{study} was made with {key}={have}, but this run has {key}={want}; {remedy}"
            )
