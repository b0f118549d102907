from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tuning.hp import OptunaHyperParameters


def fresh_trial() -> optuna.Trial:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()


def test_each_hp_call_becomes_the_matching_optuna_distribution() -> None:
    trial = fresh_trial()
    hp = OptunaHyperParameters(trial)
    units = hp.Int("units", 32, 256, step=32)
    lr = hp.Float("lr", 1e-4, 1e-1, sampling="log")
    rate = hp.Float("rate", 0.0, 0.5, step=0.1)
    act = hp.Choice("act", ["relu", "tanh"])
    flag = hp.Boolean("flag")
    assert trial.distributions == {
        "units": IntDistribution(32, 256, step=32),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "rate": FloatDistribution(0.0, 0.5, step=0.1),
        "act": CategoricalDistribution(["relu", "tanh"]),
        "flag": CategoricalDistribution([False, True]),
    }
    assert hp.values == {"units": units, "lr": lr, "rate": rate, "act": act, "flag": flag}
    assert units is not None and lr is not None
    assert units % 32 == 0 and 1e-4 <= lr <= 1e-1 and isinstance(flag, bool)


def test_asking_twice_returns_the_same_value() -> None:
    hp = OptunaHyperParameters(fresh_trial())
    first = hp.Int("blocks", 1, 3)
    assert all(hp.Int("blocks", 1, 3) == first for _ in range(5))
    assert hp.get("blocks") == first


def test_enqueued_values_drive_the_hp_calls() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"blocks": 2, "kind": "b"})
    hp = OptunaHyperParameters(study.ask())
    assert hp.Int("blocks", 1, 3) == 2 and hp.Choice("kind", ["a", "b"]) == "b"


def test_conditional_scope_samples_only_while_the_parent_matches() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"model": "mlp"})
    trial = study.ask()
    hp = OptunaHyperParameters(trial)
    hp.Choice("model", ["mlp", "cnn"])
    with hp.conditional_scope("model", ["cnn"]):
        assert hp.Int("filters", 8, 64) is None
    with hp.conditional_scope("model", "mlp"):
        assert hp.Int("units", 8, 64) is not None
    assert set(trial.params) == {"model", "units"}


def test_fixed_is_recorded_and_unsupported_sampling_is_refused() -> None:
    trial = fresh_trial()
    hp = OptunaHyperParameters(trial)
    assert hp.Fixed("classes", 10) == 10
    assert trial.user_attrs["fixed.classes"] == 10
    with pytest.raises(ValueError, match="sampling must be 'linear' or 'log'"):
        hp.Float("x", 0.1, 1.0, sampling="reverse_log")
    with pytest.raises(ValueError, match="cannot combine step with log"):
        hp.Float("y", 0.1, 1.0, step=0.1, sampling="log")
    with pytest.raises(KeyError, match="not been sampled"):
        hp.get("never")
