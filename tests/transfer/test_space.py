"""The transfer search space as a KerasTuner HyperModel: one adapter serves KerasTuner, Optuna."""

from __future__ import annotations

from pathlib import Path

import keras_tuner as kt
import optuna
import pytest

from tests.helpers import TINY_SPACE
from tuning.hp import OptunaHyperParameters
from tuning.memory import release_memory
from tuning.transfer import model as transfer
from tuning.transfer.space import SPACE, TransferHyperModel


@pytest.fixture(scope="module")
def base(base_dir: Path) -> transfer.BaseModel:
    return transfer.load_base(base_dir / "model.keras")


def test_the_defaults_are_the_configs_defaults(base: transfer.BaseModel) -> None:
    hypermodel = TransferHyperModel(base, 3)
    assert hypermodel.defaults() == {
        "learning_rate": 3e-3,
        "epochs": 30,
        "augment": 0.5,
        "unfreeze": 0,
    }
    assert hypermodel.space == SPACE


def test_an_optuna_trial_samples_every_hyperparameter_within_its_config(
    base: transfer.BaseModel,
) -> None:
    hypermodel = TransferHyperModel(base, 3, TINY_SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        values = hypermodel.recipe(OptunaHyperParameters(trial))
        assert values == trial.params
        assert 1e-2 <= values["learning_rate"] <= 3e-2
        assert values["epochs"] in (1, 2) and values["augment"] in (0.0, 0.5)
        study.tell(trial, 0.0)
    distribution = study.trials[0].distributions["learning_rate"]
    assert isinstance(distribution, optuna.distributions.FloatDistribution) and distribution.log


def test_build_gives_the_frozen_base_an_n_way_head(base: transfer.BaseModel) -> None:
    model = TransferHyperModel(base, 4).build(kt.HyperParameters())
    assert model.output_shape == (None, 4)
    assert [w.path for w in model.trainable_weights] == ["classifier/kernel", "classifier/bias"]
    release_memory()


def test_a_space_entry_without_a_known_class_is_refused(base: transfer.BaseModel) -> None:
    with pytest.raises(ValueError, match="a 'name' and a 'class' among Int, Float"):
        TransferHyperModel(base, 3, [{"class": "Uniform", "name": "learning_rate"}])
