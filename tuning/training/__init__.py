"""How a network is trained and scored, with no Optuna in sight: the one training recipe (trials,
export and transfer all call it), the one stratified fold splitter and k-fold scorer, and the one
guard against a diverging loss."""

from tuning.training.batches import augment_batch
from tuning.training.cv import CVResult, cross_validate, fold_indices
from tuning.training.divergence import DivergenceGuard
from tuning.training.recipe import Recipe, train

__all__ = [
    "CVResult",
    "DivergenceGuard",
    "Recipe",
    "augment_batch",
    "cross_validate",
    "fold_indices",
    "train",
]
