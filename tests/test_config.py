from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DEFAULT_STUDY, SMOKE
from tuning.config import load_spec
from tuning.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_shipped_study_files_parse() -> None:
    smoke = load_spec(SMOKE)
    assert (smoke.name, smoke.fidelity.subset, smoke.fidelity.folds) == ("smoke", 2000, 2)
    assert smoke.fidelity.max_epochs == 1 and smoke.budget.trials == 3
    default = load_spec(DEFAULT_STUDY)
    assert default.name == "mnist_cnn" and default.budget.timeout is not None


def test_defaults_fill_in_and_name_is_the_file_stem(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "[fidelity]\nsubset = 1000\n"))
    assert spec.name == "study"
    assert spec.fidelity.folds == 5  # the documented default k
    assert spec.search.sampler == "tpe" and spec.search.pruner == "hyperband"
    assert spec.to_dict()["fidelity"] == {
        "subset": 1000,
        "folds": 5,
        "max_epochs": 10,
        "precision": "float32",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[fidelity]\nfoldz = 3\n", "unknown key 'fidelity.foldz'; expected one of: subset, folds"),
        ("[fidelty]\nfolds = 3\n", "unknown table or key 'fidelty'"),
        ("[fidelity]\nfolds = 1\n", "'fidelity.folds' must be an integer in 2..20. Received: 1"),
        ("[fidelity]\nsubset = 70000\n", "'fidelity.subset' must be an integer in 100..60000"),
        ("[fidelity]\nmax_epochs = true\n", "'fidelity.max_epochs' must be an integer"),
        ("[search]\npruner = 'asha'\n", "'search.pruner' must be one of hyperband, median"),
        (
            "[fidelity]\nprecision = 'float16'\n",
            "'fidelity.precision' must be one of float32, mixed_bfloat16, mixed_float16, auto. "
            "Received: 'float16'",
        ),
        ("[budget]\ntimeout = -5\n", "'budget.timeout' must be a number of seconds > 0"),
        ("[study]\nname = 'a b'\n", "'study.name' must be letters, digits"),
        ("[fidelity]\nsubset = 100\nfolds = 20\n", "at least 10 images per fold"),
        ("fidelity = 3\n", "[fidelity] must be a table"),
        ("[fidelity\nfolds = 3\n", "not valid TOML"),
    ],
)
def test_bad_study_files_get_one_line_errors_naming_file_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert expected in message


def test_missing_study_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="study file not found"):
        load_spec(tmp_path / "nope.toml")
