"""Safe model loading: real `.keras` models load; unsafe, legacy and bogus files are refused."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import pytest

from tuning.errors import ModelError
from tuning.model.card import CARD_FILE
from tuning.model.file import class_names, load_model_file


def tiny_model(*, with_lambda: bool = False) -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    if with_lambda:
        x = keras.layers.Lambda(lambda t: t * 2.0)(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs)


def test_a_keras_model_loads_in_safe_mode(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    tiny_model().save(path)
    model = load_model_file(path)
    assert model.output_shape == (None, 10)


def test_a_model_needing_unsafe_deserialization_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lambda.keras"
    tiny_model(with_lambda=True).save(path)
    with pytest.raises(ModelError, match=r"lambda\.keras: refused: loading it needs unsafe"):
        load_model_file(path)


def test_legacy_hdf5_is_refused_with_the_reason(tmp_path: Path) -> None:
    h5 = tmp_path / "model.h5"
    tiny_model().save(h5)
    with pytest.raises(ModelError, match=r"model\.h5: legacy HDF5 model refused; .*model\.keras"):
        load_model_file(h5)
    # Renaming does not sneak an HDF5 file past the check.
    disguised = tmp_path / "disguised.keras"
    disguised.write_bytes(h5.read_bytes())
    with pytest.raises(ModelError, match="legacy HDF5"):
        load_model_file(disguised)


def test_files_that_are_not_models_get_clear_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.keras"
    text.write_text("hello")
    archive = tmp_path / "archive.keras"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "not a model")
    with pytest.raises(ModelError, match=r"notes\.keras: not a Keras model \(a \.keras file is"):
        load_model_file(text)
    with pytest.raises(ModelError, match=r"archive\.keras: not a Keras model \(.*config\.json"):
        load_model_file(archive)
    with pytest.raises(ModelError, match=r"absent\.keras: model file not found"):
        load_model_file(tmp_path / "absent.keras")
    with pytest.raises(ModelError, match=r"expected a \.keras model file"):
        load_model_file(text.rename(tmp_path / "notes.pb"))


def test_class_names_come_from_the_card_next_to_the_model(tmp_path: Path) -> None:
    model_path = tmp_path / "model.keras"
    assert class_names(model_path, 3) == ["0", "1", "2"]  # no card: indices
    card = tmp_path / CARD_FILE
    card.write_text(json.dumps({"class_names": ["alpha", "beta", "gamma"]}))
    assert class_names(model_path, 3) == ["alpha", "beta", "gamma"]
    with pytest.raises(ModelError, match=r"'class_names' must be a list of 4 strings"):
        class_names(model_path, 4)
    card.write_text("{not json")
    with pytest.raises(ModelError, match=r"model_card\.json: not a readable JSON model card"):
        class_names(model_path, 3)
