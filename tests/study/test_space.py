from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import optuna
import pytest

from tuning.hp import OptunaHyperParameters
from tuning.records import space_fingerprint
from tuning.study.recipe_hypermodel import epoch_range
from tuning.study.space import CNNHyperModel, describe_space, seed_params
from tuning.training.recipe import Recipe, train


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


# The recipe `tuning export` used before recipes were tuned: the seed network's baseline.
SEED_RECIPE = Recipe(
    epochs=15,
    batch_size=32,
    optimizer="adam",
    learning_rate=1e-3,
    schedule="cosine",
    weight_decay=0.0,
    label_smoothing=0.0,
    rotation=10,
    shift=0.1,
    zoom=0.1,
)


def test_kerastuner_defaults_are_the_seed_network_and_its_export_recipe() -> None:
    hypermodel = CNNHyperModel(max_epochs=15)
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    assert architecture(model) == SEED_ARCHITECTURE
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert hypermodel.recipe(hp) == SEED_RECIPE
    assert {k: hp.values[k] for k in seed_params(15)} == seed_params(15)


def test_enqueued_seed_builds_the_same_network_and_recipe_under_optuna() -> None:
    study = optuna.create_study()
    study.enqueue_trial(seed_params(15))
    hp = OptunaHyperParameters(study.ask())
    hypermodel = CNNHyperModel(max_epochs=15)
    model = hypermodel.build(hp)
    assert architecture(model) == SEED_ARCHITECTURE
    assert model.count_params() == hypermodel.build(kt.HyperParameters()).count_params()
    assert hypermodel.recipe(hp) == SEED_RECIPE
    assert model.input_shape == (None, 28, 28, 1) and model.layers[-1].name == "classifier"


def test_seed_epochs_are_capped_by_the_study_fidelity() -> None:
    assert seed_params(1)["epochs"] == 1
    assert CNNHyperModel(max_epochs=1).recipe(kt.HyperParameters()).epochs == 1
    assert epoch_range(15) == (5, 15) and epoch_range(60) == (15, 60)  # the seed stays inside


def test_every_sampled_configuration_builds() -> None:
    """Nothing in the space is impossible to build: random draws, plus every corner that
    shrinks the feature map most (3 strided or pooled blocks of 5x5 kernels)."""
    hypermodel = CNNHyperModel(max_epochs=15)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    corners = {"conv_blocks": 3, "kernel_size": 5, "convs_0": 2, "convs_1": 2, "convs_2": 2}
    for downsample in ("maxpool", "strided"):
        for head in ("flatten", "gap"):
            study.enqueue_trial({**corners, "downsample": downsample, "head": head})
    x = np.zeros((2, 28, 28, 1), dtype="float32")
    for _ in range(12):  # the 4 corners, then 8 random draws
        trial = study.ask()
        hp = OptunaHyperParameters(trial)
        model = hypermodel.build(hp)
        assert model(x).shape == (2, 10), trial.params
        hypermodel.recipe(hp)  # a valid Recipe, or ValueError
        keras.backend.clear_session()
        study.tell(trial, 0.0)


def test_describe_space_finds_conditional_parameters_and_fingerprints_them() -> None:
    description = describe_space(CNNHyperModel(max_epochs=10))
    names = {d["name"] for d in description}
    required = {"conv_blocks", "filters_0", "convs_0", "kernel_size", "batch_norm", "dropout"}
    required |= {"dense_units", "optimizer", "learning_rate", "batch_size", "epochs"}
    required |= {"downsample", "head", "block_dropout"}  # network
    required |= {"schedule", "weight_decay", "label_smoothing", "rotation", "shift", "zoom"}
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
    history = train(model, dataclasses.replace(SEED_RECIPE, epochs=1), x, np.arange(64) % 10)
    assert np.isfinite(history.history["loss"][-1])


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        CNNHyperModel(precision="float16")


def test_separable_blocks_factorise_every_conv_but_the_first() -> None:
    hp = kt.HyperParameters()
    hp.values.update(conv_type="separable")
    separable = CNNHyperModel().build(hp)
    seed = CNNHyperModel().build(kt.HyperParameters())
    kinds = {layer.name: type(layer).__name__ for layer in separable.layers if "conv" in layer.name}
    assert kinds == {
        "block0_conv0": "Conv2D",
        "block1_conv0": "SeparableConv2D",
        "block1_conv1": "SeparableConv2D",
    }
    # Same shapes as the seed network; block 1's first conv (32 -> 64 channels, 3x3) holds a
    # 3x3 depthwise kernel per input channel and a 1x1 kernel, not a full 3x3x32x64 kernel.
    assert separable.output_shape == seed.output_shape
    assert separable.get_layer("block1_conv0").count_params() == 9 * 32 + 32 * 64 + 64
    assert seed.get_layer("block1_conv0").count_params() == 9 * 32 * 64 + 64
