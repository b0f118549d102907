"""`tuning export` on a smoke study: files, card, artifacts, test accuracy, and bad input."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
import pytest

import tuning.export as export_module
from tuning.artifacts import DASHBOARD_TRIAL_ARTIFACT_PREFIX
from tuning.cli import main
from tuning.config import ExportSettings, load_spec
from tuning.data import file_sha256
from tuning.device import detect
from tuning.errors import ConfigError, ExportError, StudyMismatchError
from tuning.export import export_study
from tuning.modelfile import load_model_file
from tuning.study import run_study

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.toml"
PLOTS = [
    "learning_curves.png",
    "fold_accuracies.png",
    "confusion_matrix.png",
    "test_predictions.png",
]


@dataclasses.dataclass(frozen=True)
class Exported:
    storage: str
    data: Path
    out: Path
    artifacts: Path
    card: dict[str, Any]


@pytest.fixture(scope="module")
def exported(mnist_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The smoke study (2 trials) run into a temporary database, then exported with 1 epoch."""
    root = tmp_path_factory.mktemp("export")
    storage = f"sqlite:///{root / 'studies.db'}"
    spec = load_spec(SMOKE)
    run_study(spec, storage=storage, data=mnist_npz, n_trials=2, artifacts=root / "artifacts")
    keras.backend.clear_session()
    result = export_study(
        spec,
        storage=storage,
        data=mnist_npz,
        out=root / "models" / "smoke",
        epochs=1,
        artifacts=root / "artifacts",
    )
    return Exported(storage, mnist_npz, result.out_dir, root / "artifacts", result.card)


def test_export_writes_model_savedmodel_card_plots_and_config(exported: Exported) -> None:
    names = {p.name for p in exported.out.iterdir()}
    assert {"model.keras", "saved_model", "model_card.json", "config.json", *PLOTS} <= names
    assert not [n for n in os.listdir(exported.out.parent) if n.startswith(".")]  # no staging
    for plot in PLOTS:
        assert (exported.out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((exported.out / "config.json").read_text())
    assert config["study"]["name"] == "smoke"
    assert config["study"]["export"] == {**dataclasses.asdict(ExportSettings()), "epochs": 1}


def test_card_describes_the_best_trial_and_the_files(exported: Exported) -> None:
    card = json.loads((exported.out / "model_card.json").read_text())
    study = optuna.load_study(study_name="smoke", storage=exported.storage)
    best = study.best_trial
    assert (card["study"], card["trial"], card["params"]) == ("smoke", best.number, best.params)
    assert card["cv"]["mean"] == best.value
    assert card["cv"]["folds"] == best.user_attrs["fold_accuracies"]
    assert card["sha256"]["model"] == file_sha256(exported.out / "model.keras")
    assert card["sha256"]["data"] == file_sha256(exported.data)
    assert card["class_names"] == [str(d) for d in range(10)]
    assert card["training"]["epochs"] == 1 and card["training"]["seconds"] > 0
    assert {"tensorflow", "keras", "optuna"} <= set(card["versions"])
    assert card["training"]["device"] == card["versions"]["device"] == detect().describe()
    assert card["created"][:4].isdigit()
    assert study.user_attrs["export"]["test_accuracy"] == card["test"]["accuracy"]


def test_card_test_accuracy_equals_a_fresh_evaluation(exported: Exported) -> None:
    model = keras.saving.load_model(exported.out / "model.keras", safe_mode=True)
    with np.load(exported.data) as data:
        x, y = data["x_test"], data["y_test"]
    _, accuracy = model.evaluate(x[..., None], y, verbose=0)
    assert accuracy == pytest.approx(exported.card["test"]["accuracy"], abs=1e-6)
    assert exported.card["test"]["errors"] == round((1 - accuracy) * len(y))
    # Augmentation lives in the input pipeline: the served model has no random layers.
    assert not [layer for layer in model.layers if type(layer).__name__.startswith("Random")]


def test_savedmodel_serves_the_same_probabilities(exported: Exported) -> None:
    import tensorflow as tf

    with np.load(exported.data) as data:
        x = data["x_test"][:16, ..., None].astype("float32")
    loaded = tf.saved_model.load(str(exported.out / "saved_model"))  # keep it: serve needs it
    served = loaded.serve(tf.constant(x))
    expected = load_model_file(exported.out / "model.keras").predict(x, verbose=0)
    np.testing.assert_allclose(np.asarray(served), expected, atol=1e-5)


def test_model_card_and_plots_are_artifacts_of_the_best_trial(exported: Exported) -> None:
    study = optuna.load_study(study_name="smoke", storage=exported.storage)
    # Where optuna-dashboard looks for the artifacts of a finished trial (see tuning.artifacts).
    prefix = f"{DASHBOARD_TRIAL_ARTIFACT_PREFIX}{study.best_trial._trial_id}:"
    attrs = study._storage.get_study_system_attrs(study._study_id)
    metas = [json.loads(v) for k, v in attrs.items() if k.startswith(prefix)]
    by_name = {m["filename"]: m["artifact_id"] for m in metas}
    ids = exported.card["artifacts"]
    assert {"model.keras", "model_card.json", *PLOTS} <= set(ids)
    assert all(by_name[name] == artifact_id for name, artifact_id in ids.items())
    stored = exported.artifacts / ids["model.keras"]
    assert stored.read_bytes() == (exported.out / "model.keras").read_bytes()
    # The card on disk lists every artifact uploaded before it.
    on_disk = json.loads((exported.out / "model_card.json").read_text())["artifacts"]
    assert on_disk == {k: v for k, v in ids.items() if k != "model_card.json"}


def test_a_failed_export_leaves_the_previous_one_intact(
    exported: Exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {p.name: p.read_bytes() for p in exported.out.iterdir() if p.is_file()}

    def broken_retrain(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt  # the user gives up half-way

    monkeypatch.setattr(export_module, "retrain", broken_retrain)
    with pytest.raises(KeyboardInterrupt):
        export_study(
            load_spec(SMOKE),
            storage=exported.storage,
            data=exported.data,
            out=exported.out,
            epochs=1,
            artifacts=exported.artifacts,
        )
    after = {p.name: p.read_bytes() for p in exported.out.iterdir() if p.is_file()}
    assert after == before
    assert not [n for n in os.listdir(exported.out.parent) if n.startswith(".")]


def test_missing_study_and_database_are_clear_errors(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[study]\nname = "never-run"\n')
    with pytest.raises(
        ExportError, match=r"study 'never-run' .* not found .* Stored studies: smoke"
    ):
        export_study(load_spec(other), storage=exported.storage, data=exported.data)
    missing_db = f"sqlite:///{tmp_path / 'absent.db'}"
    assert main(["export", str(SMOKE), "--storage", missing_db, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no study database at ") and "absent.db" in err
    assert not (tmp_path / "absent.db").exists()  # nothing created by looking


def test_a_study_without_a_completed_trial_is_refused(tmp_path: Path, mnist_npz: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    study = optuna.create_study(study_name="smoke", storage=storage)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    with pytest.raises(ExportError, match="has no completed trial yet"):
        export_study(load_spec(SMOKE), storage=storage, data=mnist_npz)


def test_unwritable_output_is_refused_before_training(
    exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(export_module, "retrain", lambda *a, **k: pytest.fail("trained anyway"))
    with pytest.raises(ExportError, match=r"--out .*a-file/models: cannot write to"):
        export_study(
            load_spec(SMOKE), storage=exported.storage, data=exported.data, out=blocker / "models"
        )


def test_other_training_data_is_refused(exported: Exported, tmp_path: Path) -> None:
    with np.load(exported.data) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["x_train"] = arrays["x_train"][::-1].copy()
    changed = tmp_path / "changed.npz"
    np.savez(changed, **arrays)
    with pytest.raises(StudyMismatchError, match="was tuned on data with sha256"):
        export_study(load_spec(SMOKE), storage=exported.storage, data=changed, epochs=1)


def test_export_table_in_the_study_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[export]\nepochs = 30\nschedule = "constant"\naugment = false\n')
    spec = load_spec(path)
    assert spec.export == ExportSettings(epochs=30, schedule="constant", augment=False)
    assert "export" not in spec.protocol()  # retraining settings never invalidate a study
    path.write_text("[export]\nrotation = 90\n")
    with pytest.raises(ConfigError, match=r"'export\.rotation' must be degrees in 0\.\.45"):
        load_spec(path)


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(os.environ.get("TUNING_MNIST", "/nonexistent")).is_file(),
    reason="needs the full MNIST file: set TUNING_MNIST",
)
def test_cli_export_on_all_of_mnist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`tuning study` + `tuning export` as a user runs them: 60k images, 2 epochs (~3 minutes)."""
    data = os.environ["TUNING_MNIST"]
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    common = ["--storage", storage, "--data", data]
    assert main(["study", str(SMOKE), *common, "--trials", "1", "--no-progress"]) == 0
    out = tmp_path / "models"
    assert main(["export", str(SMOKE), *common, "--out", str(out), "--epochs", "2"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["images"] == 60_000 and card["test"]["images"] == 10_000
    assert card["test"]["accuracy"] > 0.98
