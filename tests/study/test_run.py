from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from tests.helpers import SMOKE
from tuning.artifacts import artifact_store
from tuning.device import detect, resolve_precision
from tuning.errors import ConfigError, StudyMismatchError, TrainingDivergedError
from tuning.hp import OptunaHyperParameters
from tuning.images.mnist import file_sha256
from tuning.protocol import Rung
from tuning.records import TrialKey, library_versions
from tuning.study.config import StudySpec, load_spec
from tuning.study.create import METRIC_NAME, open_study, stored_protocol
from tuning.study.curves import CURVES_JSON, CURVES_PNG, read_curves
from tuning.study.objective import RungData, make_objective
from tuning.study.recipe_hypermodel import RecipeHyperModel
from tuning.study.run import open_run, run_study
from tuning.study.space import CNNHyperModel, seed_params
from tuning.training import recipe as recipes
from tuning.training.recipe import Recipe

SHA = "a" * 64


def spec_with(**fidelity: Any) -> StudySpec:
    spec = load_spec(SMOKE)
    return dataclasses.replace(spec, fidelity=dataclasses.replace(spec.fidelity, **fidelity))


def open_smoke(storage_url: str, spec: StudySpec | None = None, sha: str = SHA) -> optuna.Study:
    study, _ = open_study(spec or load_spec(SMOKE), storage=storage_url, data_sha256=sha)
    return study


def test_new_study_records_its_protocol_and_starts_with_the_seed_network(storage_url: str) -> None:
    study = open_smoke(storage_url)
    protocol = study.user_attrs["protocol"]
    assert protocol["protocol_version"] == 2 and protocol["data_sha256"] == SHA
    assert protocol["rungs"] == [
        {"subset": 2000, "folds": 2, "run_folds": None, "epoch_scale": 1.0}
    ]
    assert len(protocol["space_fingerprint"]) == 16
    assert any(p["name"] == "filters_2" for p in study.user_attrs["space"])
    assert study.metric_names == [METRIC_NAME] == ["CV accuracy"]  # not "Objective 0"
    (waiting,) = study.trials
    assert waiting.system_attrs["fixed_params"] == seed_params(1)  # the seed network's values
    first = study.ask()
    assert first.number == 0
    assert first.user_attrs["baseline"] == "seed network"


def test_enqueued_starting_points_follow_the_baseline_with_seed_values_filled_in(
    storage_url: str,
) -> None:
    spec = dataclasses.replace(load_spec(SMOKE), enqueue=({"batch_norm": True, "filters_0": 16},))
    study = open_smoke(storage_url, spec)
    baseline, start = study.trials
    assert baseline.user_attrs["baseline"] and start.user_attrs["enqueued_from"] == str(SMOKE)
    fixed = start.system_attrs["fixed_params"]
    assert fixed == {**seed_params(1), "batch_norm": True, "filters_0": 16}
    assert len(open_smoke(storage_url, spec).trials) == 2  # not enqueued again on resume


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"filters_0": 40}, "'filters_0' must be one of 8, 16, 32, 48, 64, 96, 128. Received: 40"),
        ({"filter_0": 32}, "'filter_0' is not a hyperparameter of the space; expected one of: "),
        ({"epochs": 99}, "'epochs' must be a number in 1..1. Received: 99"),
        ({"batch_norm": 1}, "'batch_norm' must be true or false. Received: 1"),
    ],
)
def test_a_bad_starting_point_is_one_line_and_stores_nothing(
    storage_url: str, params: dict[str, Any], expected: str
) -> None:
    spec = dataclasses.replace(load_spec(SMOKE), enqueue=({"batch_norm": True}, params))
    with pytest.raises(ConfigError) as info:
        open_smoke(storage_url, spec)
    message = str(info.value)
    assert message.startswith(f"{SMOKE}: [[study.enqueue]] number 2: {expected}")
    assert "\n" not in message
    assert optuna.get_all_study_names(storage_url) == []


def test_running_again_resumes_the_same_study(storage_url: str) -> None:
    study = open_smoke(storage_url)
    study.tell(study.ask(), 0.5)
    again = open_smoke(storage_url)
    assert again._study_id == study._study_id
    assert len(optuna.get_all_study_names(storage_url)) == 1
    assert [t.value for t in again.trials] == [0.5]
    assert len(again.trials) == 1  # the seed network is not enqueued a second time


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"folds": 3}, "'folds': 2"),
        ({"subset": 1000}, "'subset': 2000"),
        ({"subset": 0, "rungs": (Rung(2000, 2, 1),)}, "'run_folds': None"),
        ({"max_epochs": 2}, "max_epochs=1"),
        ({"precision": "mixed_bfloat16"}, "precision=float32"),
    ],
)
def test_changed_protocol_is_refused_and_nothing_is_lost(
    storage_url: str, change: dict[str, Any], field: str
) -> None:
    study = open_smoke(storage_url)
    study.tell(study.ask(), 0.5)
    with pytest.raises(StudyMismatchError) as info:
        open_smoke(storage_url, spec_with(**change))
    assert "study 'smoke'" in str(info.value) and field in str(info.value)
    assert "new [study] name" in str(info.value)
    assert len(optuna.load_study(study_name="smoke", storage=storage_url).trials) == 1


def test_a_study_stored_before_rungs_and_tuned_recipes_is_refused_with_what_to_do(
    storage_url: str,
) -> None:
    study = open_smoke(storage_url)
    study.tell(study.ask(), 0.97)
    # What a study stored by the previous tuning holds: one fidelity, no protocol version.
    old = {"subset": 2000, "folds": 2, "max_epochs": 1, "seed": 42, "data_sha256": SHA}
    study.set_user_attr("protocol", {**old, "space_fingerprint": "0123456789abcdef"})
    with pytest.raises(StudyMismatchError) as info:
        open_smoke(storage_url)
    message = str(info.value)
    assert "\n" not in message and "was stored by an earlier tuning (protocol 1" in message
    assert "give" in message and "a new [study] name" in message
    assert [t.value for t in optuna.load_study(study_name="smoke", storage=storage_url).trials] == [
        0.97
    ]


def test_changed_data_or_search_space_is_refused(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_smoke(storage_url)
    with pytest.raises(StudyMismatchError, match="data_sha256=a{64}"):
        open_smoke(storage_url, sha="b" * 64)

    # The space's code gains a hyperparameter between two runs.
    recipe = CNNHyperModel.recipe

    def wider(self: CNNHyperModel, hp: Any) -> Any:
        hp.Choice("momentum", [0.9, 0.99])
        return recipe(self, hp)

    monkeypatch.setattr(CNNHyperModel, "recipe", wider)
    with pytest.raises(StudyMismatchError, match="space_fingerprint"):
        open_smoke(storage_url)


def test_a_resumed_run_does_not_replay_the_first_runs_random_draws(storage_url: str) -> None:
    smoke = load_spec(SMOKE)
    random = dataclasses.replace(smoke.search, sampler="random")
    spec = dataclasses.replace(smoke, enqueue_seed=False, search=random)
    first = open_smoke(storage_url, spec)
    draws = []
    for _ in range(2):
        trial = first.ask()
        draws.append(trial.suggest_float("x", 0, 1))
        first.tell(trial, 0.0)
    resumed = open_smoke(storage_url, spec)
    trial = resumed.ask()
    assert trial.suggest_float("x", 0, 1) not in draws


class TinyHyperModel(RecipeHyperModel):
    """A 7,850-weight net trained by the space's recipe hyperparameters; trains in a blink."""

    def __init__(self, *, scale: float = 1 / 255, max_epochs: int = 2) -> None:
        super().__init__(max_epochs=max_epochs)
        self.scale = scale

    def _make_model(self, hp: Any) -> keras.Model:
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Rescaling(self.scale),
                keras.layers.Flatten(),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )


TINY_RECIPE = {"learning_rate": 5e-3, "batch_size": 32, "epochs": 2, "rotation": 0}
TWO_RUNGS = (Rung(200, 2, run_folds=1, epoch_scale=0.5), Rung(200, 2))


def tiny_data(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    y = (np.arange(n) % 10).astype(np.uint8)
    x = np.zeros((n, 28, 28, 1), np.uint8)
    x[np.arange(n), 2 * y, :, 0] = 255
    return x, y


def tiny_objective(spec: StudySpec, hypermodel: RecipeHyperModel | None = None) -> Any:
    x, y = tiny_data()
    data = [RungData(rung, x, y) for rung in spec.fidelity.ladder]
    return make_objective(
        hypermodel or TinyHyperModel(), data, spec=spec, versions=library_versions()
    )


def test_a_trial_climbs_the_rungs_reporting_each_at_its_own_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[Recipe, int]] = []
    train = recipes.train

    def spy(model: Any, recipe: Recipe, x: np.ndarray, *args: Any, **kw: Any) -> Any:
        calls.append((recipe, len(x)))
        return train(model, recipe, x, *args, **kw)

    monkeypatch.setattr(recipes, "train", spy)
    spec = spec_with(rungs=TWO_RUNGS, max_epochs=2)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.enqueue_trial(TINY_RECIPE)
    study.optimize(tiny_objective(spec), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    # Each fold trains through the one training function, by the trial's own recipe at the
    # rung's share of its epochs (`tuning export` trains through it too, on every image).
    hp = OptunaHyperParameters(optuna.trial.FixedTrial(trial.params))  # type: ignore[arg-type]
    recipe = TinyHyperModel().recipe(hp)
    assert calls == [(recipe.scaled(0.5), 100), (recipe, 100), (recipe, 100)]
    # Rung 0 at step 1, rung 1 at step 3: the steps of successive halving with factor 3.
    assert sorted(trial.intermediate_values) == [1, 3]
    lower, upper = trial.user_attrs[TrialKey.RUNGS]
    assert (len(lower["folds"]), lower["epochs"]) == (1, 1)  # one fold, half the epochs
    assert (len(upper["folds"]), upper["epochs"]) == (2, 2)
    assert trial.intermediate_values[1] == pytest.approx(lower["mean"])
    assert trial.value == pytest.approx(upper["mean"]) == pytest.approx(np.mean(upper["folds"]))
    folds = trial.user_attrs["fold_accuracies"]
    assert folds == upper["folds"] and trial.user_attrs["cv_std"] == pytest.approx(np.std(folds))
    assert trial.user_attrs["param_count"] == 7850
    assert trial.user_attrs["train_seconds"] > 0
    assert set(trial.user_attrs["versions"]) >= {"tensorflow", "keras", "optuna", "keras_tuner"}
    assert trial.user_attrs["versions"]["device"] == detect().describe()
    # The per-epoch curves of the last rung are artifacts (a JSON file and a plot).
    files = {m.filename for m in get_all_artifact_meta(trial, storage=study._storage)}
    assert files == {CURVES_JSON, CURVES_PNG}
    curves = read_curves(study, trial, store=artifact_store())
    assert len(curves) == 2 and all(len(fold["val_accuracy"]) == 2 for fold in curves)
    assert curves[0]["val_accuracy"][-1] == pytest.approx(folds[0])


def test_curves_of_a_trial_stored_before_they_became_artifacts_come_from_its_attribute() -> None:
    study = optuna.create_study()
    legacy = [{"loss": [0.5], "val_accuracy": [0.9]}]
    study.enqueue_trial({}, user_attrs={"fold_histories": legacy})
    study.tell(study.ask(), 0.9)
    assert read_curves(study, study.trials[0], store=artifact_store()) == legacy


@pytest.mark.parametrize(
    "attrs", [{}, {"baseline": "seed network"}, {"enqueued_from": "studies/x.toml"}]
)
def test_a_trial_not_promoted_stops_after_its_rung_but_baseline_and_starting_points_climb(
    attrs: dict[str, str],
) -> None:
    spec = spec_with(rungs=TWO_RUNGS, max_epochs=2)
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0)
    )
    study.enqueue_trial(TINY_RECIPE, user_attrs=attrs)
    study.optimize(tiny_objective(spec), n_trials=1)
    trial = study.trials[0]
    if attrs:
        assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == [1, 3]
    else:
        assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
        assert len(trial.user_attrs[TrialKey.RUNGS]) == 1  # the rung it finished is kept
        files = {m.filename for m in get_all_artifact_meta(trial, storage=study._storage)}
        assert CURVES_JSON in files


def test_a_nan_trial_fails_and_the_study_continues() -> None:
    spec = spec_with(folds=2, max_epochs=1)
    study = optuna.create_study(direction="maximize")
    broken = tiny_objective(spec, TinyHyperModel(scale=float("inf"), max_epochs=1))
    healthy = tiny_objective(spec, TinyHyperModel(max_epochs=1))
    objectives = iter([broken, healthy])
    study.optimize(lambda t: next(objectives)(t), n_trials=2, catch=(TrainingDivergedError,))
    failed, done = study.trials
    assert failed.state == TrialState.FAIL and "loss became nan" in failed.user_attrs["fail_reason"]
    assert done.state == TrialState.COMPLETE


@pytest.mark.parametrize("state", [TrialState.FAIL, TrialState.PRUNED])
def test_a_study_without_a_completed_baseline_enqueues_it_again(
    storage_url: str, state: TrialState
) -> None:
    study = open_smoke(storage_url)
    baseline = study.ask()
    assert baseline.user_attrs["baseline"] == "seed network"
    study.tell(baseline, state=state)  # say, its worker was killed, then its retry too
    other = study.ask()
    study.tell(other, 0.9)
    resumed = open_smoke(storage_url)
    waiting = resumed.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["baseline"] == "seed network"
    assert waiting[0].system_attrs["fixed_params"] == seed_params(1)
    resumed.ask()
    assert len(open_smoke(storage_url).trials) == 3  # running now: not enqueued twice


def test_a_completed_baseline_is_not_enqueued_again(storage_url: str) -> None:
    study = open_smoke(storage_url)
    study.tell(study.ask(), 0.9)
    assert open_smoke(storage_url).get_trials(states=(TrialState.WAITING,)) == []


def test_a_study_stored_before_its_metric_was_named_gets_the_name(storage_url: str) -> None:
    study = open_smoke(storage_url)
    study._storage.set_study_system_attr(study._study_id, "study:metric_names", None)
    assert optuna.load_study(study_name="smoke", storage=storage_url).metric_names is None
    assert open_smoke(storage_url).metric_names == [METRIC_NAME]


def test_auto_precision_is_resolved_once_when_the_study_is_created(
    storage_url: str, mnist_npz: Path
) -> None:
    auto = spec_with(precision="auto")
    study = open_run(auto, storage=storage_url, data=mnist_npz).study
    here = resolve_precision("auto", detect())
    assert study.user_attrs["protocol"]["precision"] == here
    assert stored_protocol(study, remedy="").precision == here

    # As if a GPU machine had created it: `auto` resumes with what is stored, wherever it runs.
    protocol = {**study.user_attrs["protocol"], "precision": "mixed_float16"}
    study.set_user_attr("protocol", protocol)
    resumed = open_run(auto, storage=storage_url, data=mnist_npz)
    assert resumed.hypermodel.precision == "mixed_float16"
    # A file that names another policy is refused, as any protocol change is.
    with pytest.raises(
        StudyMismatchError, match="precision=mixed_float16, but .*precision=float32"
    ):
        open_smoke(storage_url, spec_with(precision="float32"), sha=file_sha256(mnist_npz))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_precision_study_trains_and_scores_in_that_precision(
    storage_url: str, mnist_npz: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    policies: list[str] = []
    fit = RecipeHyperModel.fit

    def spy(self: RecipeHyperModel, hp: Any, model: keras.Model, *args: Any, **kw: Any) -> Any:
        conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
        policies.append(conv.dtype_policy.name)
        return fit(self, hp, model, *args, **kw)

    monkeypatch.setattr(RecipeHyperModel, "fit", spy)
    spec = spec_with(precision=policy, subset=200)
    study = run_study(spec, storage=storage_url, data=mnist_npz, n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE
    assert study.user_attrs["protocol"]["precision"] == policy
    # One network trained per fold, each in `policy`.
    assert policies == [policy] * spec.fidelity.folds
