"""A study: the study file (`config`), the search space (`space`, a KerasTuner HyperModel), the
rungs a trial climbs (`rungs`), the objective that scores a trial by k-fold CV (`objective`), and
running, resuming and batching it (`run`, `workers`, `progress`, `note`)."""

from tuning.study.config import Rung, StudySpec, load_spec
from tuning.study.run import StudyRun, open_run, run_study
from tuning.study.rungs import best_at_highest_rung, rung_correlations
from tuning.study.space import CNNHyperModel, describe_space

__all__ = [
    "CNNHyperModel",
    "Rung",
    "StudyRun",
    "StudySpec",
    "best_at_highest_rung",
    "describe_space",
    "load_spec",
    "open_run",
    "run_study",
    "rung_correlations",
]
