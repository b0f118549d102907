from __future__ import annotations

from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import optuna
import pytest

from tuning.hp import OptunaHyperParameters
from tuning.space import CNNHyperModel, describe_space, seed_params, space_fingerprint


def architecture(model: keras.Model) -> list[str]:
    """'Conv32', 'Pool', 'Dense100', ... for the layers that define the network."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            names.append(f"Conv{layer.filters}")
        elif isinstance(layer, keras.layers.MaxPooling2D):
            names.append("Pool")
        elif isinstance(layer, keras.layers.Dense):
            names.append(f"Dense{layer.units}")
    return names


SEED_ARCHITECTURE = ["Conv32", "Pool", "Conv64", "Conv64", "Pool", "Dense100", "Dense10"]


def test_kerastuner_defaults_are_the_seed_network() -> None:
    hypermodel = CNNHyperModel(max_epochs=10)
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    assert architecture(model) == SEED_ARCHITECTURE
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert hypermodel.fit_options(hp) == {"batch_size": 32, "epochs": 10}
    assert {k: hp.values[k] for k in seed_params(10)} == seed_params(10)


def test_enqueued_seed_builds_the_same_network_under_optuna() -> None:
    study = optuna.create_study()
    study.enqueue_trial(seed_params(10))
    hp = OptunaHyperParameters(study.ask())
    hypermodel = CNNHyperModel(max_epochs=10)
    model = hypermodel.build(hp)
    assert architecture(model) == SEED_ARCHITECTURE
    assert model.count_params() == hypermodel.build(kt.HyperParameters()).count_params()
    assert hypermodel.fit_options(hp) == {"batch_size": 32, "epochs": 10}
    assert model.input_shape == (None, 28, 28, 1) and model.layers[-1].name == "classifier"


def test_seed_epochs_are_capped_by_the_study_fidelity() -> None:
    assert seed_params(1)["epochs"] == 1
    assert CNNHyperModel(max_epochs=1).fit_options(kt.HyperParameters())["epochs"] == 1


def test_describe_space_finds_conditional_parameters_and_fingerprints_them() -> None:
    description = describe_space(CNNHyperModel(max_epochs=10))
    names = {d["name"] for d in description}
    required = {"conv_blocks", "filters_0", "convs_0", "kernel_size", "batch_norm", "dropout"}
    required |= {"dense_units", "optimizer", "learning_rate", "batch_size", "epochs"}
    assert required <= names
    assert {"filters_2", "convs_2"} <= names  # only reached when conv_blocks == 3
    lr = next(d for d in description if d["name"] == "learning_rate")
    assert lr["sampling"] == "log"
    fingerprint = space_fingerprint(description)
    assert fingerprint == space_fingerprint(describe_space(CNNHyperModel(max_epochs=10)))
    assert fingerprint != space_fingerprint(describe_space(CNNHyperModel(max_epochs=5)))


def test_the_same_hypermodel_runs_under_kerastuner(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(64, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=64)
    tuner = kt.RandomSearch(
        CNNHyperModel(max_epochs=1),
        objective="val_accuracy",
        max_trials=1,
        directory=str(tmp_path),
        project_name="kt",
        seed=0,
    )
    tuner.search(x, y, validation_data=(x[:16], y[:16]), verbose=0)
    best = tuner.get_best_hyperparameters(1)[0]
    assert best.get("epochs") == 1 and "conv_blocks" in best.values


def test_mixed_bfloat16_precision_builds_bfloat16_layers_and_a_float32_output() -> None:
    fp32 = CNNHyperModel(max_epochs=1).build(kt.HyperParameters())
    assert {layer.compute_dtype for layer in fp32.layers} == {"float32"}
    model = CNNHyperModel(max_epochs=1, precision="mixed_bfloat16").build(kt.HyperParameters())
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
    assert model.get_layer("block0_conv0").compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)
    assert model.get_layer("classifier").compute_dtype == "float32"
    assert architecture(model) == SEED_ARCHITECTURE  # same network, same hyperparameters
    x = np.random.default_rng(0).integers(0, 255, (64, 28, 28, 1)).astype("uint8")
    history = model.fit(x, np.arange(64) % 10, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        CNNHyperModel(precision="float16")
