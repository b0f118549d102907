"""The second backend: the whole pipeline under JAX (study, export, transfer, predict), a study
that refuses to resume under another backend, and one seed giving the same batches and warps on
every backend installed here. Keras fixes its backend once per process, so JAX and PyTorch run
in child processes; this process is TensorFlow's."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest

from tests.helpers import ROOT, draw_batches, tiny_study
from tests.letters import write_letters
from tuning import backend
from tuning.cli import main
from tuning.model.card import CARD_VERSION, ExportCard, ModelCard, TransferCard
from tuning.model.predict import predict_images

# JAX is installed with the suite (`make test` adds the jax extra), so it is always compared;
# PyTorch is compared where it is installed (a 750 MB wheel CI does not take).
BACKENDS = ["tensorflow", "jax"] + (["torch"] if importlib.util.find_spec("torch") else [])
CLASSES = "alpha,beta,gamma"

# The batches of another backend, drawn in a child process (this one is TensorFlow's).
BATCHES_SCRIPT = """
import sys
import numpy as np
from tests.helpers import draw_batches

data = np.load(sys.argv[1])
np.savez(sys.argv[2], **draw_batches(data["x"], data["y"]))
"""


def under(name: str) -> dict[str, str]:
    return {**os.environ, "KERAS_BACKEND": name, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_under(
    name: str, argv: list[str], *, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env=under(name), capture_output=True, text=True, check=False,
        timeout=timeout,
    )  # fmt: skip


def test_one_seed_gives_the_same_batches_and_warps_on_every_backend(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.zeros((20, 28, 28, 1), np.uint8)
    x[:, 6:22, 12:16] = 255  # a bar the warps rotate, zoom and shift
    x[:, 8:12, 6:22] = rng.integers(100, 255, size=(20, 4, 16, 1))
    np.savez(tmp_path / "in.npz", x=x, y=np.arange(20) % 10)
    seen = {"tensorflow": draw_batches(x, np.arange(20) % 10)}
    for name in BACKENDS[1:]:
        out = tmp_path / f"{name}.npz"
        result = run_under(
            name, [sys.executable, "-c", BATCHES_SCRIPT, str(tmp_path / "in.npz"), str(out)]
        )
        assert result.returncode == 0, result.stderr[-2000:]
        seen[name] = dict(np.load(out))
    reference = seen["tensorflow"]
    first, second = reference["images0"], reference["images1"]
    assert first.shape == (20, 28, 28, 1) and np.abs(first - second).max() > 100  # new warps
    assert np.abs(first - np.repeat(x, 1, axis=0).astype(np.float32)).max() > 100  # warped
    for name, batches in seen.items():
        for epoch in (0, 1):
            np.testing.assert_array_equal(batches[f"labels{epoch}"], reference[f"labels{epoch}"])
            # One bilinear warp per image by each backend's own kernels: equal within 1e-3 of 255.
            np.testing.assert_allclose(
                batches[f"images{epoch}"], reference[f"images{epoch}"], atol=1e-3, err_msg=name
            )


@dataclass(frozen=True)
class JaxRun:
    folder: Path
    study: Path
    storage: str
    export: Path
    transfer: Path
    outputs: list[subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path) -> JaxRun:
    """Under KERAS_BACKEND=jax, as a user runs it: a one-trial study of the seed network on 400
    digits (JAX compiles each fold's model anew, a few seconds each, whatever the images), its
    export, a transfer to three letters and a prediction."""
    folder = tmp_path_factory.mktemp("jax")
    storage = f"sqlite:///{folder / 'studies.db'}"
    with np.load(mnist_npz) as data:
        digits = {k: data[k][:400] if k.endswith("train") else data[k][:100] for k in data.files}
    np.savez(folder / "digits.npz", **digits)
    study = tiny_study(folder / "digits.toml", name="digits", source=str(folder / "digits.npz"))
    export, transfer = folder / "models" / "digits", folder / "models" / "letters"
    letters = write_letters(folder / "letters", CLASSES.split(","), 6)
    tuning = [sys.executable, "-m", "tuning.cli"]
    steps = [
        ["study", str(study), "--no-progress"],
        ["export", str(study), "--out", str(export), "--formats", "saved_model,onnx,litert"],
        ["transfer", str(export / "model.keras"), "--data", str(letters), "--classes", CLASSES,
         "--trials", "1", "--folds", "2", "--out", str(transfer)],
        ["predict", str(transfer / "model.keras"), str(letters / "beta" / "beta_000.png")],
    ]  # fmt: skip
    outputs = []
    for step in steps:
        argv = [*tuning, *step, "--storage", storage] if step[0] != "predict" else tuning + step
        result = run_under("jax", argv, timeout=600)
        assert result.returncode == 0, f"{step[0]}: {result.stderr[-3000:]}"
        outputs.append(result)
    return JaxRun(folder, study, storage, export, transfer, outputs)


def test_under_jax_a_study_exports_transfers_and_predicts(jax_run: JaxRun) -> None:
    study, exported, transferred, predicted = jax_run.outputs
    assert "Keras backend jax" in study.stdout
    assert "Keras backend jax" in exported.stdout and "Exported trial #" in exported.stdout
    assert "nested-CV accuracy" in transferred.stdout
    assert predicted.stdout.split()[1] in CLASSES.split(",")
    export_card = ModelCard.read(jax_run.export / "model.keras")
    assert isinstance(export_card, ExportCard)
    assert export_card.backend == "jax" and export_card.versions["backend"] == "jax"
    assert "jax" in export_card.versions and "tensorflow" not in export_card.versions
    # TensorFlow is installed beside JAX here: a child process under it writes the other formats
    # from model.keras, each checked here against the JAX model's probabilities.
    assert export_card.formats == ["keras", "saved_model", "onnx", "litert"]
    assert (jax_run.export / "saved_model" / "saved_model.pb").is_file()
    assert {"model.onnx", "model.tflite"} <= set(export_card.files)
    transfer_card = ModelCard.read(jax_run.transfer / "model.keras")
    assert isinstance(transfer_card, TransferCard)
    assert transfer_card.backend == "jax" and transfer_card.formats == ["keras"]
    stored = json.loads((jax_run.export / "model_card.json").read_text())
    assert stored["backend"] == "jax" and stored["card_version"] == CARD_VERSION


def test_a_model_trained_under_jax_predicts_the_same_under_tensorflow(jax_run: JaxRun) -> None:
    assert backend.name() == "tensorflow"
    image = next((jax_run.folder / "letters" / "beta").iterdir())
    here = predict_images(jax_run.transfer / "model.keras", [image])[0]
    label, confidence = jax_run.outputs[3].stdout.split()[1:3]
    assert here.label == label and here.probability == pytest.approx(float(confidence), abs=1e-3)


def test_a_study_refuses_to_resume_under_another_backend(
    jax_run: JaxRun, capsys: pytest.CaptureFixture[str]
) -> None:
    before = optuna.load_study(study_name="digits", storage=jax_run.storage).trials
    argv = ["study", str(jax_run.study), "--storage", jax_run.storage]
    code = main([*argv, "--trials", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "was scored under the jax backend, but this run uses tensorflow" in err
    assert "run it with KERAS_BACKEND=jax" in err
    after = optuna.load_study(study_name="digits", storage=jax_run.storage).trials
    assert after == before  # nothing trained, nothing stored


UNKNOWN_BACKEND_SCRIPT = """
import sys
import tuning
from tuning.errors import ConfigError

try:
    tuning.load_spec
except ConfigError as exc:
    print(exc)
print("keras imported" if "keras" in sys.modules else "keras not imported")
"""


def test_an_unknown_backend_is_one_line_with_the_choices_before_keras_starts(
    tmp_path: Path,
) -> None:
    choices = (
        "expected one of: tensorflow, jax, torch (tuning trains with these), numpy, openvino "
        "(Keras's, for predictions only)"
    )
    missing = tmp_path / "no-such-export"
    result = run_under("bogus", [sys.executable, "-m", "tuning.cli", "compare", str(missing), "."])
    assert result.returncode == 2
    # The backend first, not the path: nothing else ran.
    assert result.stderr.splitlines() == [
        f"error: KERAS_BACKEND='bogus' is not a Keras backend; {choices}"
    ]
    result = run_under("TensorFlow", [sys.executable, "-c", UNKNOWN_BACKEND_SCRIPT])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        f"KERAS_BACKEND='TensorFlow' is not a Keras backend (did you mean 'tensorflow'?); "
        f"{choices}",
        "keras not imported",
    ]
