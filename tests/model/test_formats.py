"""The formats an export ships: each file written from a tiny network agrees with Keras on the
same images (a mixed-precision one through its float32 twin), a file of another model fails
parity, a file that is no model fails naming it, and a missing package is refused naming the
install. (Under JAX a TensorFlow child process writes them: tests/test_backends.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.helpers import ROOT, synthetic_digits
from tuning.errors import ExportError, ModelError, ParityError
from tuning.model.formats import (
    DEFAULT_FORMATS,
    FILES,
    FORMATS,
    PARITY_TOLERANCE,
    check_files,
    check_formats,
    float32_twin,
    write_formats,
)
from tuning.model.runners import load_runner


def tiny_network(seed: int, *, policy: str = "float32") -> keras.Model:
    """A conv layer of 4 filters and a softmax: untrained, as parity needs no training."""
    keras.utils.set_random_seed(seed)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        inputs = keras.Input((28, 28, 1))
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Flatten()(keras.layers.MaxPooling2D()(x))
        x = keras.layers.Dense(10)(x)
        outputs = keras.layers.Activation("softmax", dtype="float32")(x)
        return keras.Model(inputs, outputs)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = synthetic_digits(40, seed=0)
    return x[..., None], y.astype(np.int64)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    """A tiny network saved as an export saves it, then written in every format."""
    folder = tmp_path_factory.mktemp("formats")
    model = tiny_network(0)
    model.save(folder / FILES["keras"])
    assert write_formats(model, folder, FORMATS) == [folder / FILES[f] for f in FORMATS[1:]]
    return model, folder


def test_every_format_computes_what_keras_computes_and_has_its_latency(
    written: tuple[keras.Model, Path], digits: tuple[np.ndarray, np.ndarray]
) -> None:
    model, folder = written
    x, y = digits
    checks = check_files(model, folder, FORMATS, x, y)
    assert [c.format for c in checks] == list(FORMATS)
    assert [c.file for c in checks] == [FILES[f] for f in FORMATS]
    keras_errors = int(np.sum(model.predict(x, verbose=0).argmax(axis=1) != y))
    assert {c.test_errors for c in checks} == {keras_errors}
    assert checks[0].max_abs_diff is None  # the Keras file is the reference
    for check in checks[1:]:
        assert check.max_abs_diff is not None and check.max_abs_diff <= PARITY_TOLERANCE
    for check in checks:
        assert check.latency.batch1_ms > 0 and check.latency.batch256_ms > 0
        assert check.latency.threads >= 1


def test_a_mixed_precision_model_ships_float32_files_checked_against_its_twin(
    tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """ONNX Runtime refuses the bfloat16 graph Keras would write, and LiteRT needs TensorFlow's
    own ops for it: the files hold the same weights computing in float32."""
    model = tiny_network(1, policy="mixed_bfloat16")
    model.save(tmp_path / FILES["keras"])
    twin = float32_twin(model)
    assert {layer.dtype_policy.name for layer in twin.layers} == {"float32"}
    np.testing.assert_array_equal(twin.get_weights()[0], model.get_weights()[0])
    assert float32_twin(twin) is twin
    write_formats(model, tmp_path, ("keras", "onnx", "litert"))
    x, y = digits
    checks = check_files(model, tmp_path, ("keras", "onnx", "litert"), x, y)
    expected = twin.predict(x, verbose=0)
    for check in checks[1:]:
        got = load_runner(tmp_path / check.file)(x.astype(np.float32))
        np.testing.assert_allclose(got, expected, atol=PARITY_TOLERANCE)


@pytest.mark.parametrize("name", ["onnx", "litert"])
def test_a_file_of_another_model_fails_parity_in_one_line(
    written: tuple[keras.Model, Path],
    tmp_path: Path,
    digits: tuple[np.ndarray, np.ndarray],
    name: str,
) -> None:
    _, folder = written
    (tmp_path / FILES[name]).write_bytes((folder / FILES[name]).read_bytes())
    x, y = digits
    with pytest.raises(ParityError) as caught:
        check_files(tiny_network(7), tmp_path, ("keras", name), x, y)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / FILES[name]}: the {name} file's probabilities")
    assert f"expected at most {PARITY_TOLERANCE:g}" in message and "\n" not in message
    assert caught.value.exit_status == 1


@pytest.mark.parametrize(
    ("name", "says"), [("model.onnx", "not an ONNX model"), ("model.tflite", "not a LiteRT")]
)
def test_a_file_that_is_no_model_fails_in_one_line_naming_it(
    tmp_path: Path, name: str, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(b"GIF89a this is no model" * 20)
    with pytest.raises(ModelError) as caught:
        load_runner(path)
    assert str(caught.value).startswith(f"{path}: {says}")
    assert "\n" not in str(caught.value)
    with pytest.raises(ModelError, match="model file not found"):
        load_runner(tmp_path / "absent.onnx")


def test_unknown_formats_are_refused_and_keras_is_always_first() -> None:
    assert check_formats(["litert", "onnx"]) == ("keras", "onnx", "litert")
    assert check_formats([]) == ("keras",)
    with pytest.raises(ExportError) as caught:
        check_formats(["keras", "onyx"])
    assert str(caught.value) == (
        "formats: 'onyx' is not a format; expected any of: keras, saved_model, onnx, litert. "
        "Received: formats=['keras', 'onyx']"
    )
    assert caught.value.param == "formats"


def _without(modules: list[str], code: str, *, backend: str = "tensorflow") -> list[str]:
    """The lines `code` prints in a fresh process where `modules` cannot be imported (as if not
    installed: an entry of None in sys.modules makes Python refuse it)."""
    script = f"import sys\nsys.modules.update(dict.fromkeys({modules!r}))\n{code}"
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        check=True, timeout=120,
    )  # fmt: skip
    return done.stdout.strip().splitlines()


CHECK = """
from tuning.errors import ExportError
from tuning.model.formats import check_formats
for formats, default in {cases!r}:
    try:
        print(check_formats(formats, default=default))
    except ExportError as exc:
        print(exc)
"""


def test_a_format_whose_package_is_missing_is_refused_naming_the_install() -> None:
    cases = [(["keras", "onnx"], False), (["litert"], False), (["saved_model"], False)]
    onnx, litert, saved_model = _without(
        ["onnxruntime", "ai_edge_litert"], CHECK.format(cases=cases)
    )
    assert onnx == (
        "formats: writing onnx needs onnxruntime, not installed here; install with "
        "pip install 'tuning[onnx]'. Received: formats=['keras', 'onnx']"
    )
    assert litert.startswith("formats: writing litert needs ai-edge-litert, not installed here")
    assert "pip install 'tuning[litert]'" in litert
    assert saved_model == "('keras', 'saved_model')"


def test_without_tensorflow_the_default_ships_keras_alone_and_asking_for_more_fails() -> None:
    """JAX on a machine without TensorFlow (the GPU image) still exports, as model.keras."""
    cases = [(list(DEFAULT_FORMATS), True), (["saved_model"], False)]
    default, asked = _without(["tensorflow"], CHECK.format(cases=cases), backend="jax")
    assert default == "('keras',)"
    assert asked.startswith("formats: writing saved_model needs tensorflow, not installed here")
