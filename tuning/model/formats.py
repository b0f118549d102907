"""The formats an export ships a model in: `.keras` (always: the file tested, transferred and
kept), a TensorFlow SavedModel, ONNX and LiteRT. Which packages each needs (refused before any
training when they are missing), writing them, and the check each file gets when written:
parity with the Keras model on the test images and its own latency (`FormatCheck`).

Every format but `.keras` is written by TensorFlow: in this process when it is the Keras
backend, else by a child process under TensorFlow that loads `model.keras`. A model computing
in a mixed precision (bfloat16 or float16 with float32 weights) is written as its float32
twin, the same weights computing in float32, as ONNX and LiteRT runtimes need; its files are
checked against that twin.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tuning import backend
from tuning.errors import ExportError, ParityError
from tuning.model.cost import FormatCheck, cpu_threads, keras_predictor, measure_latency
from tuning.model.runners import load_runner, run_in_batches

FORMATS = ("keras", "saved_model", "onnx", "litert")
DEFAULT_FORMATS = ("keras", "saved_model")
FILES = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "onnx": "model.onnx",
    "litert": "model.tflite",
}
# What writing and running each format needs, as (module, pip name), and the extra with them.
NEEDS = {
    "saved_model": (("tensorflow", "tensorflow"),),
    "onnx": (
        ("tensorflow", "tensorflow"),
        ("tf2onnx", "tf2onnx"),
        ("onnx", "onnx"),
        ("onnxruntime", "onnxruntime"),
    ),
    "litert": (("tensorflow", "tensorflow"), ("ai_edge_litert", "ai-edge-litert")),
}
EXTRAS = {"onnx": "onnx", "litert": "litert"}
_KERAS_EXPORT = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}
PARITY_TOLERANCE = 1e-4  # the most a probability of a written file may differ from Keras's


def check_formats(formats: Sequence[str], *, default: bool = False) -> tuple[str, ...]:
    """`formats` in their canonical order, `keras` first (always written): the formats an
    export can write here. With `default` (none were asked for), a format whose packages are
    missing is left out instead (the default SavedModel where TensorFlow is not installed).

    Raises:
        ExportError (param `formats`): a name that is no format, or a format whose packages
            are not installed, naming the install.
    """
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise ExportError(
            f"{unknown[0]!r} is not a format; expected any of: {', '.join(FORMATS)}. "
            f"Received: formats={list(formats)!r}",
            param="formats",
        )
    chosen = [name for name in FORMATS if name == "keras" or name in formats]
    writable = []
    for name in chosen:
        missing = [
            pip for module, pip in NEEDS.get(name, ()) if not importlib.util.find_spec(module)
        ]
        if not missing:
            writable.append(name)
        elif not default:
            extra = EXTRAS.get(name)
            install = f"pip install 'tuning[{extra}]'" if extra else f"pip install {missing[0]}"
            raise ExportError(
                f"writing {name} needs {', '.join(missing)}, not installed here; install with "
                f"{install}. Received: formats={list(formats)!r}",
                param="formats",
            )
    return tuple(writable)


def float32_twin(model: Any) -> Any:
    """`model` itself when it computes in float32, else the same network and weights rebuilt
    to compute in float32 (nested models too)."""
    import keras

    config = keras.saving.serialize_keras_object(model)
    as_float32 = _float32_policies(config)
    if as_float32 == config:
        return model
    twin = keras.saving.deserialize_keras_object(as_float32, safe_mode=True)
    twin.set_weights(model.get_weights())
    return twin


def write_formats(
    model: Any, folder: Path, formats: Sequence[str], *, twin: Any = None
) -> list[Path]:
    """Write `model` (saved as `folder/model.keras` already) in each of `formats` but keras,
    into `folder`, from its float32 `twin` (default: made here); returns the paths written.

    Raises:
        ExportError: TensorFlow could not write a format (its one-line reason).
    """
    others = [name for name in formats if name != "keras"]
    if not others:
        return []
    if backend.name() == "tensorflow":
        _write_here(float32_twin(model) if twin is None else twin, folder, others)
    else:
        _write_under_tensorflow(folder / FILES["keras"], folder, others)
    return [folder / FILES[name] for name in others]


def check_files(
    model: Any,
    folder: Path,
    formats: Sequence[str],
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    twin: Any = None,
) -> list[FormatCheck]:
    """Each of `formats` in `folder` set beside the Keras `model` (its float32 `twin`, by
    default made here) on
    `images`: the largest difference of probabilities, the errors on `labels` (None: none
    given) and the file's own latency at batch 1 and 256; the `.keras` file by the model
    itself, as it is shipped.

    Raises:
        ParityError: a file's probabilities differ by more than `PARITY_TOLERANCE`, or its
            errors from the Keras model's.
    """
    threads = cpu_threads()
    shape = tuple(int(d) for d in model.input_shape[1:])
    keras_run = keras_predictor(model)
    shipped = run_in_batches(keras_run, images)
    checks = [
        FormatCheck("keras", FILES["keras"], measure_latency(keras_run, shape, threads=threads),
                    None, _errors(shipped, labels)),
    ]  # fmt: skip
    twin = float32_twin(model) if twin is None else twin
    reference = shipped if twin is model else run_in_batches(keras_predictor(twin), images)
    for name in (name for name in formats if name != "keras"):
        runner = load_runner(folder / FILES[name], threads=threads)
        probs = run_in_batches(runner, images)
        diff = float(np.max(np.abs(probs - reference)))
        if not diff <= PARITY_TOLERANCE:  # NaN fails too
            raise ParityError(
                f"{runner.path}: the {name} file's probabilities differ from the Keras model's "
                f"by up to {diff:.2g} on {len(images)} images; expected at most "
                f"{PARITY_TOLERANCE:g}"
            )
        errors, expected = _errors(probs, labels), _errors(reference, labels)
        if errors != expected:
            raise ParityError(
                f"{runner.path}: the {name} file makes {errors} errors on {len(images)} "
                f"images; expected the Keras model's {expected}"
            )
        latency = measure_latency(runner, shape, threads=threads)
        checks.append(FormatCheck(name, FILES[name], latency, diff, errors))
    return checks


def _errors(probs: np.ndarray, labels: np.ndarray | None) -> int | None:
    return None if labels is None else int(np.sum(probs.argmax(axis=1) != labels))


def _float32_policies(config: Any) -> Any:
    """A serialized model with every floating dtype policy made float32."""
    if isinstance(config, list):
        return [_float32_policies(item) for item in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(
        config.get("config"), dict
    ):
        return {**config, "config": {**config["config"], "name": "float32"}}
    return {key: _float32_policies(value) for key, value in config.items()}


def _write_here(model: Any, folder: Path, formats: Sequence[str]) -> None:
    """Write `model` in `formats` with Keras's exporters, under TensorFlow."""
    model(np.zeros((1, *model.input_shape[1:]), np.float32), training=False)  # exporters need it
    for name in formats:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")  # tf2onnx's NumPy deprecations, the converter's
            model.export(str(folder / FILES[name]), format=_KERAS_EXPORT[name], verbose=False)


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporters print to standard output (tf2onnx's and the converter's progress)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _write_under_tensorflow(model_path: Path, folder: Path, formats: Sequence[str]) -> None:
    """Write the model of `model_path` in `formats` in a child process under TensorFlow."""
    argv = [sys.executable, "-m", "tuning.model.formats", str(model_path), str(folder)]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([*argv, *formats], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ExportError(
            f"{model_path}: writing {', '.join(formats)} under TensorFlow failed: {last}"
        )


def _main(argv: Sequence[str]) -> int:
    """`python -m tuning.model.formats MODEL.keras FOLDER FORMAT...`, under TensorFlow."""
    from tuning.model.file import load_model_file

    model_path, folder, *formats = argv
    try:
        model = float32_twin(load_model_file(model_path, compile=False))
        _write_here(model, Path(folder), formats)
    except Exception as exc:
        print(f"{type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
