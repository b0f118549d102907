"""Your data and your HyperModel: a tiny user HyperModel on generated 32x32 RGB shapes of 4
classes runs a study, resumes it, exports, and `tuning predict` names the generated classes; the
default MNIST study keeps its fingerprint; each bad input is one line that names what was wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras_tuner as kt
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from examples.make_shapes import CLASS_NAMES, make_shapes, render_png
from tests.helpers import DEFAULT_STUDY, tiny_study
from tuning.cli import main
from tuning.export.pipeline import export_study
from tuning.images.mnist import file_sha256
from tuning.images.preprocess import resize_image
from tuning.model.card import ExportCard
from tuning.model.file import load_model_file
from tuning.model.predict import predict_images
from tuning.records import StudyKey, TrialKey, space_fingerprint
from tuning.study.config import load_spec
from tuning.study.hypermodels import make_hypermodel
from tuning.study.run import run_study
from tuning.study.space import CNNHyperModel, describe_space
from tuning.typed_json import to_json

# User code, as a study folder would hold it.
TINY_MODELS = """
import keras
import keras_tuner as kt


def _compiled(model):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Tiny(kt.HyperModel):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.shape, self.classes = input_shape, num_classes

    def build(self, hp):
        inputs = keras.Input(self.shape)
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(hp.Choice("filters", [4, 8], default=4), 3, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return _compiled(keras.Model(inputs, keras.layers.Dense(self.classes, "softmax")(x)))


class OwnFit(Tiny):
    # Trains its own way and reports no validation score.
    def fit(self, hp, model, x, y, validation_data=None, callbacks=None, **kwargs):
        return model.fit(x, y, epochs=2, verbose=0)


def build_dense(hp, *, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Dense(hp.Int("units", 4, 8, default=4), "relu")(x)
    return _compiled(keras.Model(inputs, keras.layers.Dense(num_classes, "softmax")(x)))


NOT_A_MODEL = 3


def raises(hp):
    raise RuntimeError("boom")


def returns_string(hp):
    return "a model"


def uncompiled(hp, *, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, "softmax")(x))


def wrong_input(hp, *, num_classes):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(inputs)
    return _compiled(keras.Model(inputs, keras.layers.Dense(num_classes, "softmax")(x)))


def logits(hp, *, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    return _compiled(keras.Model(inputs, keras.layers.Dense(num_classes)(x)))


def wrong_output(hp, *, input_shape):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    return _compiled(keras.Model(inputs, keras.layers.Dense(3, "softmax")(x)))
"""


def save_npz(path: Path, arrays: dict[str, Any]) -> None:
    np.savez(path, **arrays)


def write_study(
    folder: Path, *, hypermodel: str = "tinymodels.py:Tiny", source: str = "shapes.npz",
    data_extra: str = "",
) -> Path:  # fmt: skip
    """A study folder: the study file, the user's module and (unless there) the shapes data."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tinymodels.py").write_text(TINY_MODELS)
    if not (folder / "shapes.npz").exists():
        save_npz(folder / "shapes.npz", make_shapes(train_per_class=12, test_per_class=3))
    return tiny_study(
        folder / "study.toml",
        name="custom",
        source=source,
        data=data_extra,
        space=f'[space]\nhypermodel = "{hypermodel}"\n',
        trials=2,
    )


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A custom study run for 2 trials, resumed for 1 more, exported, and asked to predict."""
    folder = tmp_path_factory.mktemp("custom")
    spec = load_spec(write_study(folder))
    url = f"sqlite:///{folder / 'studies.db'}"
    run_study(spec, storage=url, artifacts=folder / "artifacts")
    first = len(optuna.load_study(study_name="custom", storage=url).trials)
    study = run_study(spec, storage=url, n_trials=1, artifacts=folder / "artifacts")
    result = export_study(
        spec, storage=url, out=folder / "model", artifacts=folder / "artifacts", baseline=False
    )
    pngs = [render_png(folder / f"{name}.png", name, seed=99) for name in CLASS_NAMES]
    predictions = predict_images(result.out_dir / "model.keras", pngs)
    return {"folder": folder, "study": study, "first": first, "card": result.card,
            "predictions": predictions, "pngs": pngs,
            "model": result.out_dir / "model.keras"}  # fmt: skip


def test_the_users_hypermodel_is_tuned_with_the_training_recipe(custom: dict[str, Any]) -> None:
    study = custom["study"]
    protocol = study.user_attrs[StudyKey.PROTOCOL]
    assert protocol["hypermodel"] == "tinymodels.py:Tiny"
    assert protocol["data_sha256"] == file_sha256(custom["folder"] / "shapes.npz")
    baseline = study.trials[0]
    assert baseline.user_attrs[TrialKey.BASELINE] and baseline.params["filters"] == 4
    # The user's hyperparameter and the recipe's, in every trial.
    assert all({"filters", "learning_rate", "rotation"} <= set(t.params) for t in study.trials)


def test_a_custom_study_resumes_where_it_stopped(custom: dict[str, Any]) -> None:
    study = custom["study"]
    assert custom["first"] == 2 and len(study.trials) == 3
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_the_export_is_tested_once_and_its_card_names_the_classes(
    custom: dict[str, Any],
) -> None:
    card: ExportCard = custom["card"]
    assert card.class_names == list(CLASS_NAMES)
    assert to_json(card.input) == {"shape": [32, 32, 3], "range": "0..255", "preprocess": "resize"}
    # Tested once, on the npz's own test split (3 per class), by the file the user gets.
    assert card.test is not None and card.test.images == 12
    model = load_model_file(custom["model"])
    with np.load(custom["folder"] / "shapes.npz") as data:
        x, y = data["x_test"], data["y_test"]
    errors = int(np.sum(model.predict(x, verbose=0).argmax(axis=1) != y))
    assert card.test.errors == errors and card.test.accuracy == pytest.approx(1 - errors / 12)


def test_predict_resizes_keeps_colours_and_names_the_generated_classes(
    custom: dict[str, Any],
) -> None:
    """The card says `resize`: each picture is resized to 32x32 RGB (not made MNIST-like), and
    the label of the model's best output is the card's class name for it."""
    predictions = custom["predictions"]
    model = load_model_file(custom["model"])
    batch = np.stack([resize_image(p, height=32, width=32, channels=3) for p in custom["pngs"]])
    expected = model.predict(batch, verbose=0)
    assert [p.index for p in predictions] == expected.argmax(axis=1).tolist()
    assert [p.label for p in predictions] == [CLASS_NAMES[p.index] for p in predictions]
    assert [p.probability for p in predictions] == pytest.approx(expected.max(axis=1).tolist())


def test_a_plain_build_function_gets_the_shape_and_the_classes(tmp_path: Path) -> None:
    spec = load_spec(write_study(tmp_path, hypermodel="tinymodels.py:build_dense"))
    hypermodel = make_hypermodel(spec, input_shape=(32, 32, 3), num_classes=4)
    model = hypermodel.build(kt.HyperParameters())
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 4)


def test_a_hypermodel_with_its_own_fit_is_trained_by_it(tmp_path: Path) -> None:
    spec = load_spec(write_study(tmp_path, hypermodel="tinymodels.py:OwnFit"))
    hypermodel = make_hypermodel(spec, input_shape=(32, 32, 3), num_classes=4)
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    with np.load(tmp_path / "shapes.npz") as data:
        x, y = data["x_train"], data["y_train"]
    history = hypermodel.fit(hp, model, x, y, validation_data=(x, y))
    assert len(history.history["loss"]) == 2  # its own 2 epochs, not the recipe's 1
    assert "learning_rate" not in hp.values  # no recipe hyperparameters to tune
    # Scored like every trial all the same: accuracy on the held-out data, from the trained model.
    accuracy = float(np.mean(model.predict(x, verbose=0).argmax(axis=1) == y))
    assert history.history["val_accuracy"][-1] == pytest.approx(accuracy)


def test_the_default_mnist_study_keeps_its_protocol_and_fingerprint() -> None:
    spec = load_spec(DEFAULT_STUDY)
    hypermodel = make_hypermodel(spec, input_shape=(28, 28, 1), num_classes=10)
    assert type(hypermodel) is CNNHyperModel
    # The built-in space's fingerprint since it reached down to 8 filters, 32-unit heads and
    # separable convs (issue 28): studies stored before are refused on resume, in one line.
    assert space_fingerprint(describe_space(hypermodel)) == "9fb85c2adf5484b9"
    protocol = spec.protocol(
        precision="float32", backend="tensorflow", data_sha256="a" * 64, space_fingerprint="f"
    )
    assert set(protocol.to_attr()) == {"protocol_version", "rungs", "max_epochs", "seed",
                                       "precision", "backend", "data_sha256",
                                       "space_fingerprint"}  # fmt: skip


def _bad_npz(folder: Path, **arrays: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_npz(folder / "shapes.npz", arrays)


@pytest.mark.parametrize(
    ("hypermodel", "expected"),
    [
        ("nosuchmodule:Tiny", "cannot import 'nosuchmodule': ModuleNotFoundError"),
        ("tinymodels:Missing", "module 'tinymodels' has no 'Missing'"),
        ("tinymodels:NOT_A_MODEL", "expected a keras_tuner.HyperModel or a build(hp) function. "
         "Received: int"),
        ("tinymodels:raises", "build(hp) raised RuntimeError: boom"),
        ("tinymodels:returns_string", "must return a compiled keras.Model. Received: str"),
        ("tinymodels:uncompiled", "build(hp) must return a compiled model"),
        ("tinymodels:wrong_input", "the model takes inputs of shape (8, 8, 3), but the data's "
         "images are (32, 32, 3)"),
        ("tinymodels:wrong_output", "must output one score per class (4 classes)"),
        ("tinymodels:logits", "the training recipe needs softmax outputs"),
    ],
)  # fmt: skip
def test_a_bad_hypermodel_is_one_line_and_nothing_stored_is_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], hypermodel: str, expected: str
) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    kept = optuna.create_study(study_name="kept", storage=url)
    kept.tell(kept.ask(), 1.0)
    path = write_study(tmp_path / "study", hypermodel=hypermodel)
    code = main(["study", str(path), "--storage", url, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert err.startswith(f"error: {path}: space.hypermodel '{hypermodel}': ")
    assert expected in err
    assert optuna.get_all_study_names(url) == ["kept"]


def _one_class_folder(folder: Path) -> str:
    (folder / "letters" / "train" / "alpha").mkdir(parents=True)
    return "letters"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda f: _bad_npz(f, x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.zeros(4, int)),
         "shapes.npz: no 'x_train' array; expected x_train, y_train"),
        (lambda f: _bad_npz(f, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(4) + 0.5),
         "labels must be one integer per image"),
        (lambda f: _bad_npz(f, x_train=np.zeros((4, 8, 8), np.uint8), y_train=2 - np.arange(4)),
         "labels must be integers in 0..2"),
        (lambda f: _bad_npz(f, x_train=np.zeros((4, 8, 8, 2), np.uint8), y_train=np.arange(4)),
         "images must be (N, H, W) or (N, H, W, C) with C = 1 or 3"),
        (lambda f: _bad_npz(f, x_train=np.zeros((4, 8, 8), np.float32), y_train=np.arange(4)),
         "images must be uint8"),
    ],
)  # fmt: skip
def test_bad_data_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, expected: str
) -> None:
    make(tmp_path / "study")
    path = write_study(tmp_path / "study")
    code = main(["study", str(path), "--storage", f"sqlite:///{tmp_path / 'db'}", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and expected in err, err


def test_labels_beyond_the_named_classes_and_a_one_class_folder_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'db'}"
    path = write_study(tmp_path / "a", data_extra='class_names = ["circle", "square"]')
    assert main(["study", str(path), "--storage", url, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "labels must be integers in 0..1 (one per class name). Received: range 0..3" in err

    folder = tmp_path / "b"
    folder.mkdir()
    path = write_study(folder, source=_one_class_folder(folder))
    assert main(["study", str(path), "--storage", url, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "a classifier needs at least 2 classes" in err, err
