"""A shipped model: its card (`ModelCard`, the only way cards are written or read), loading a
`.keras` file safely with its class names, predicting labels for image files, its predictions on
the test split, an ensemble of several networks, the paired comparison of two models, and what
a network costs to run (parameters, FLOPs, latency)."""

from tuning.model.card import CARD_FILE, ModelCard
from tuning.model.compare import (
    MeanDifference,
    PairedComparison,
    compare_exports,
    mean_difference,
    paired_comparison,
)
from tuning.model.cost import FormatCheck, ModelCost, model_cost
from tuning.model.ensemble import build_ensemble, ensemble_members
from tuning.model.file import class_names, load_model_file
from tuning.model.predict import Prediction, format_predictions, predict_images
from tuning.model.predictions import PREDICTIONS_FILE, TestPredictions

__all__ = [
    "CARD_FILE",
    "PREDICTIONS_FILE",
    "FormatCheck",
    "MeanDifference",
    "ModelCard",
    "ModelCost",
    "PairedComparison",
    "Prediction",
    "TestPredictions",
    "build_ensemble",
    "class_names",
    "compare_exports",
    "ensemble_members",
    "format_predictions",
    "load_model_file",
    "mean_difference",
    "model_cost",
    "paired_comparison",
    "predict_images",
]
