"""tuning: Optuna studies that tune Keras CNNs by k-fold cross-validation.

The data flow, one subpackage each: study file -> `tuning.study` (spec, search space, rungs,
k-fold objective; `tuning.images` and `tuning.training` underneath) -> storage -> `tuning.export`
-> `tuning.transfer` -> `tuning.model` (card, load, predict). The entry points below are
imported on first use, so `import tuning` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_ENTRY_POINTS = {
    "load_spec": "tuning.study.config",
    "run_study": "tuning.study.run",
    "export_study": "tuning.export.pipeline",
    "run_transfer": "tuning.transfer.run",
    "predict_images": "tuning.model.predict",
    "nested_score": "tuning.study.nested",
    "compare_exports": "tuning.model.compare",
}

__all__ = [
    "compare_exports",
    "export_study",
    "load_spec",
    "nested_score",
    "predict_images",
    "run_study",
    "run_transfer",
]

if TYPE_CHECKING:
    from tuning.export.pipeline import export_study
    from tuning.model.compare import compare_exports
    from tuning.model.predict import predict_images
    from tuning.study.config import load_spec
    from tuning.study.nested import nested_score
    from tuning.study.run import run_study
    from tuning.transfer.run import run_transfer


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        from tuning.backend import check_backend_name

        check_backend_name()  # an unknown KERAS_BACKEND named with the choices, not by Keras
        return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'tuning' has no attribute {name!r}")
