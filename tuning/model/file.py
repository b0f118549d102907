"""Load a trained model from a `.keras` file safely; name its outputs from the card beside it."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from tuning.errors import ModelError
from tuning.model.card import CARD_FILE, ModelCard

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def load_model_file(path: str | Path, *, compile: bool = True) -> Any:
    """A `keras.Model` from a `.keras` file, loaded with `safe_mode=True` (`compile=False`: without
    its optimizer, loss and metrics, e.g. to nest it in another model).

    Raises:
        ModelError: the file is missing, is legacy HDF5 (refused: its loader runs code from the
            file that safe_mode does not vet), is not a Keras model archive, or needs unsafe
            deserialization such as a Python lambda (refused).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    with open(path, "rb") as handle:
        head = handle.read(len(_HDF5_MAGIC))
    if head == _HDF5_MAGIC or path.suffix.lower() in (".h5", ".hdf5"):
        raise ModelError(
            f"{path}: legacy HDF5 model refused; its loader does not give the safety checks of "
            "the .keras format. Re-save it from trusted code with model.save('model.keras')"
        )
    if path.suffix.lower() != ".keras":
        raise ModelError(f"{path}: expected a .keras model file. Received suffix {path.suffix!r}")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a Keras model (a .keras file is a zip archive)")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise ModelError(f"{path}: not a Keras model (the archive has no config.json)")

    import keras

    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "safe_mode" in message or "unsafe" in message.lower():
            raise ModelError(
                f"{path}: refused: loading it needs unsafe deserialization (it contains code, "
                f"e.g. a Lambda layer); only safe models are loaded. Reason: {message}"
            ) from None
        raise ModelError(
            f"{path}: cannot load the model ({type(exc).__name__}: {message})"
        ) from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path}: expected a Keras model. Received: {type(model).__name__}")
    return model


def class_names(model_path: str | Path, num_classes: int) -> list[str]:
    """The labels of a model's outputs: its card's `class_names`, else "0", "1", ...

    Raises:
        ModelError: the card is unreadable, or its `class_names` are not `num_classes` strings.
    """
    card = ModelCard.read(model_path)
    if card is None or card.class_names is None:
        return [str(i) for i in range(num_classes)]
    if len(card.class_names) != num_classes:
        raise ModelError(
            f"{Path(model_path).with_name(CARD_FILE)}: 'class_names' must be a list of "
            f"{num_classes} strings (one per model output). Received: {card.class_names!r:.80}"
        )
    return card.class_names
