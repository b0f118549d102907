"""tuning: Optuna studies that tune Keras CNNs by k-fold cross-validation."""

__version__ = "0.1.0"
