"""A study: the study file (`config`), the search space (`space`, a KerasTuner HyperModel, or
the study file's own: `hypermodels`), the rungs a trial climbs (`rungs`), the objective that
scores a trial by k-fold CV (`objective`), running, resuming and batching it (`run`, `workers`,
`progress`, `note`), and scoring a whole search by nested CV (`nested`)."""

from tuning.study.config import Rung, StudySpec, load_spec
from tuning.study.hypermodels import UserHyperModel, make_hypermodel
from tuning.study.nested import NestedScore, nested_score
from tuning.study.run import StudyRun, open_run, run_study
from tuning.study.rungs import best_at_highest_rung, rung_correlations
from tuning.study.space import CNNHyperModel, describe_space

__all__ = [
    "CNNHyperModel",
    "NestedScore",
    "Rung",
    "StudyRun",
    "StudySpec",
    "UserHyperModel",
    "best_at_highest_rung",
    "describe_space",
    "load_spec",
    "make_hypermodel",
    "nested_score",
    "open_run",
    "run_study",
    "rung_correlations",
]
