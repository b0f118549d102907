"""A shipped model: its card (`ModelCard`, the only way cards are written or read), loading a
`.keras` file safely with its class names, and predicting labels for image files."""

from tuning.model.card import CARD_FILE, ModelCard
from tuning.model.file import class_names, load_model_file
from tuning.model.predict import Prediction, format_predictions, predict_images

__all__ = [
    "CARD_FILE",
    "ModelCard",
    "Prediction",
    "class_names",
    "format_predictions",
    "load_model_file",
    "predict_images",
]
