"""A study: the study file (`config`, its `[objective]` and pick rule in `objective_config`),
what it tries (`space`, the built-in CNN, or the study file's own HyperModel: `hypermodels`;
both share the tuned training recipe of `recipe_hypermodel`), what a trial's network costs and
the limits it must meet (`trial_cost`), the rungs a trial climbs and the Pareto front
(`rungs`), the objective that scores a trial by k-fold CV (`objective`), its sampler, pruner
and directions (`sampling`), its first trials (`baseline`),
creating or resuming it (`create`), running and batching it (`run`, `workers`, `progress`,
`note`), and scoring a whole search by nested CV (`nested`)."""

from tuning.study.config import StudySpec, load_spec
from tuning.study.create import open_study
from tuning.study.hypermodels import UserHyperModel, make_hypermodel
from tuning.study.nested import NestedScore, nested_score
from tuning.study.recipe_hypermodel import RecipeHyperModel
from tuning.study.run import StudyRun, open_run, run_study
from tuning.study.rungs import best_at_highest_rung, pareto_front, rung_correlations
from tuning.study.space import CNNHyperModel, describe_space

__all__ = [
    "CNNHyperModel",
    "NestedScore",
    "RecipeHyperModel",
    "StudyRun",
    "StudySpec",
    "UserHyperModel",
    "best_at_highest_rung",
    "describe_space",
    "load_spec",
    "make_hypermodel",
    "nested_score",
    "open_run",
    "open_study",
    "pareto_front",
    "run_study",
    "rung_correlations",
]
