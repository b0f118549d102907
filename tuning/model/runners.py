"""Run an exported file outside Keras: an ONNX model in ONNX Runtime (CPU), a LiteRT model in
its interpreter, a SavedModel in TensorFlow. Each is a `Runner`, a function of a NumPy batch
that returns the model's outputs, so the export's parity check, its latency timer
(`tuning.model.cost.measure_latency`) and `tuning predict` run every format the same way."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuning.errors import ModelError

Shape = tuple[int | None, ...]
# The file suffix of each format a runner loads, and the extra that installs its runtime.
SUFFIXES = {".onnx": "onnx", ".tflite": "litert"}
_RUNTIME = {"onnx": ("onnxruntime", "onnx"), "litert": ("ai_edge_litert", "litert")}


@dataclass(frozen=True)
class Runner:
    """A loaded model file: `run(batch)` gives its outputs as a NumPy array; `input_shape` is
    (None, H, W, C) with None for any size the file leaves open."""

    path: Path
    format: str
    input_shape: Shape
    run: Callable[[np.ndarray], np.ndarray]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)


def load_runner(path: str | Path, *, threads: int | None = None) -> Runner:
    """The model in `path` (`.onnx`, `.tflite`, or a SavedModel folder) ready to run on
    `threads` CPU threads (default: the runtime's own choice).

    Raises:
        ModelError: the file is missing, is not a model of the format its name says, or the
            runtime for it is not installed (naming the install).
    """
    path = Path(path)
    kind = "saved_model" if path.is_dir() else SUFFIXES.get(path.suffix.lower())
    if kind is None:
        expected = ", ".join(SUFFIXES)
        raise ModelError(f"{path}: expected a {expected} file. Received suffix {path.suffix!r}")
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    if kind in _RUNTIME:
        module, extra = _RUNTIME[kind]
        if importlib.util.find_spec(module) is None:
            raise ModelError(
                f"{path}: running a {kind} model needs {module}, which is not installed here; "
                f"install it with pip install 'tuning[{extra}]'"
            )
    load = {"onnx": _onnx, "litert": _litert, "saved_model": _saved_model}[kind]
    return load(path, threads)


def _onnx(path: Path, threads: int | None) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own exception types for a bad file
        raise ModelError(
            f"{path}: not an ONNX model that ONNX Runtime can load ({_first_line(exc)})"
        ) from None
    [given] = session.get_inputs()
    dtype = np.float16 if "float16" in given.type else np.float32
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in given.shape)

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {given.name: batch.astype(dtype, copy=False)})[0])

    return Runner(path, "onnx", shape, run)


def _litert(path: Path, threads: int | None) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(
            f"{path}: not a LiteRT (.tflite) model the interpreter can load ({_first_line(exc)})"
        ) from None
    [given], [output] = interpreter.get_input_details(), interpreter.get_output_details()
    shape = tuple(int(d) if d > 0 else None for d in given["shape_signature"])
    sized: list[tuple[int, ...]] = []  # the batch shape the interpreter's tensors are sized for

    def run(batch: np.ndarray) -> np.ndarray:
        # The interpreter holds one input size at a time: resized (and re-allocated) only when
        # the batch changes, so timing a fixed batch times inference alone.
        if sized != [batch.shape]:
            interpreter.resize_tensor_input(given["index"], batch.shape)
            interpreter.allocate_tensors()
            sized[:] = [batch.shape]
        interpreter.set_tensor(given["index"], batch.astype(given["dtype"], copy=False))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(output["index"]))

    return Runner(path, "litert", shape, run)


def _saved_model(path: Path, threads: int | None) -> Runner:
    import tensorflow as tf

    try:
        loaded: Any = tf.saved_model.load(str(path))
        serve = loaded.serve
        [spec] = serve.input_signature
    except Exception as exc:
        raise ModelError(f"{path}: not a SavedModel with a serve function ({exc})") from None

    def run(batch: np.ndarray) -> np.ndarray:
        # `loaded` stays referenced here: its variables live as long as the function does.
        return np.asarray(loaded.serve(tf.constant(batch, dtype=spec.dtype)))

    return Runner(path, "saved_model", tuple(spec.shape), run)


def run_in_batches(runner: Callable[[np.ndarray], Any], x: np.ndarray, *, batch: int = 256) -> Any:
    """`runner`'s outputs on all of `x`, `batch` images per call, as one float64 array."""
    parts = [np.asarray(runner(x[i : i + batch]), np.float64) for i in range(0, len(x), batch)]
    return np.concatenate(parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
