"""The Python entry points: `import tuning` names the steps and loads none of them."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tuning
from tests.helpers import ROOT

ENTRY_POINTS = (
    "load_spec",
    "run_study",
    "export_study",
    "run_transfer",
    "predict_images",
    "nested_score",
    "compare_exports",
)


def test_import_tuning_loads_no_training_library() -> None:
    libraries = "{'tensorflow', 'keras', 'optuna'}"
    check = f"import sys, tuning; print(sorted({libraries} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_entry_points_are_the_subpackages_functions() -> None:
    from tuning.export import export_study
    from tuning.model import compare_exports, predict_images
    from tuning.study import load_spec, nested_score, run_study
    from tuning.transfer import run_transfer

    assert sorted(tuning.__all__) == sorted(ENTRY_POINTS)
    assert [getattr(tuning, name) for name in ENTRY_POINTS] == [
        load_spec,
        run_study,
        export_study,
        run_transfer,
        predict_images,
        nested_score,
        compare_exports,
    ]
    spec = tuning.load_spec(ROOT / "studies" / "smoke.toml")
    assert spec.name == "smoke"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'train'"):
        _ = tuning.train
