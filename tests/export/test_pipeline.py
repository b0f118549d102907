"""`tuning export` on the session's smoke study: the trial's own recipe on all images, files,
card, the baseline beside the winner, artifacts, test accuracy, and bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
import pytest
from optuna_dashboard import get_note
from PIL import Image

from tests.helpers import SMOKE, SmokeRun, add_rung_trial, copy_study
from tuning.artifacts import DASHBOARD_TRIAL_ARTIFACT_PREFIX
from tuning.cli import main
from tuning.device import detect
from tuning.errors import ExportError, StudyMismatchError
from tuning.export import ExportResult, export_study, load_exportable_study
from tuning.export.members import members_dir
from tuning.hp import OptunaHyperParameters
from tuning.images.mnist import file_sha256
from tuning.images.preprocess import prepare_image
from tuning.model.card import ExportCard, ModelCard
from tuning.model.compare import mean_difference, paired_comparison
from tuning.model.cost import count_flops
from tuning.model.ensemble import ensemble_members
from tuning.model.file import load_model_file
from tuning.model.formats import FILES, FORMATS, PARITY_TOLERANCE
from tuning.model.predictions import TestPredictions
from tuning.model.runners import load_runner, run_in_batches
from tuning.model.tradeoff import fastest_sentence, tradeoff_sentence, verdict
from tuning.records import StudyKey
from tuning.study.config import ExportSettings, load_spec
from tuning.study.create import open_study
from tuning.study.space import CNNHyperModel
from tuning.summaries import export_summary
from tuning.training import recipe as recipes
from tuning.typed_json import to_json


def _hidden(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


PLOTS = [
    "learning_curves.png",
    "fold_accuracies.png",
    "confusion_matrix.png",
    "test_predictions.png",
]


@dataclasses.dataclass(frozen=True)
class Exported:
    trial: int
    storage: str
    data: Path
    out: Path
    artifacts: Path
    result: ExportResult

    @property
    def card(self) -> ExportCard:
        return self.result.card


def fastest_trial_but_the_baseline(storage: str) -> int:
    """The finished trial, besides the seed network, that trained fastest: the smoke study's
    random draws differ in cost up to fivefold, and these tests check what an export does with
    a trial, not what the trial is."""
    trials = optuna.load_study(study_name="smoke", storage=storage).trials[1:]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return min(done, key=lambda t: t.user_attrs["train_seconds"]).number


@pytest.fixture(scope="module")
def exported(smoke_run: SmokeRun, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A trial of a copy of the session's smoke study exported with two seeds in every format:
    the seed-network baseline (trial 0) is exported first, the same way, beside it."""
    root = tmp_path_factory.mktemp("export")
    storage = copy_study(smoke_run.storage, root)
    trial = fastest_trial_but_the_baseline(storage)
    shutil.copytree(smoke_run.artifacts, root / "artifacts")  # the trials' curves
    result = export_study(
        load_spec(SMOKE),
        storage=storage,
        data=smoke_run.data,
        out=root / "models" / "smoke",
        trial=trial,
        seeds=2,
        formats=FORMATS,
        artifacts=root / "artifacts",
    )
    return Exported(trial, storage, smoke_run.data, result.out_dir, root / "artifacts", result)


def test_export_writes_model_savedmodel_card_plots_and_config(exported: Exported) -> None:
    names = {p.name for p in exported.out.iterdir()}
    assert {"model_card.json", "config.json", *PLOTS, *FILES.values()} <= names
    assert "test_predictions.npz" in names
    assert sorted(names) == exported.card.files  # the card lists exactly what is there
    assert _hidden(exported.out.parent) == [".smoke.members"]  # no staging; the members stay
    for plot in PLOTS:
        assert (exported.out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((exported.out / "config.json").read_text())
    assert config["study"]["name"] == "smoke"
    defaults = {"epoch_scale": 1, "seeds": 1, "members": "seeds", "margin": 10, "pick": "best"}
    settings = ExportSettings(seeds=2, formats=FORMATS)
    assert config["study"]["export"] == to_json(settings)
    assert config["study"]["export"] == {**defaults, "seeds": 2, "formats": list(FORMATS)}
    assert config["command"]["trial"] == exported.trial
    assert config["command"]["seeds_override"] == 2
    assert config["command"]["formats_override"] == list(FORMATS)


def test_the_card_on_disk_is_the_card_returned(exported: Exported) -> None:
    on_disk = json.loads((exported.out / "model_card.json").read_text())
    assert on_disk == exported.card.to_dict()
    assert ModelCard.read(exported.out / "model.keras") == exported.card


def test_card_describes_the_trial_its_recipe_and_the_files(exported: Exported) -> None:
    card = exported.card
    study = optuna.load_study(study_name="smoke", storage=exported.storage)
    trial = study.trials[exported.trial]
    assert (card.study, card.trial, card.params) == ("smoke", exported.trial, trial.params)
    assert card.cv is not None and card.cv.protocol is not None
    assert card.cv.mean == trial.value and card.cv.rung == 0
    assert card.cv.folds == trial.user_attrs["fold_accuracies"]
    assert card.cv.protocol.to_attr() == study.user_attrs[StudyKey.PROTOCOL]
    # The trial's own recipe: its hyperparameters, epochs x the study file's epoch_scale.
    assert card.training is not None and card.training.recipe is not None
    hp = OptunaHyperParameters(optuna.trial.FixedTrial(trial.params))  # type: ignore[arg-type]
    assert card.training.recipe == CNNHyperModel(max_epochs=1).recipe(hp)
    assert card.training.epoch_scale == 1
    assert card.sha256 == {
        "model": file_sha256(exported.out / "model.keras"),
        "data": file_sha256(exported.data),
        "predictions": file_sha256(exported.out / "test_predictions.npz"),
    }
    assert card.class_names == [str(d) for d in range(10)]
    assert card.training.images == 2000
    assert {"tensorflow", "keras", "optuna"} <= set(card.versions)
    assert card.backend == card.versions["backend"] == "tensorflow"
    assert card.formats == list(FORMATS) and set(FILES.values()) <= set(card.files)
    assert card.training.device == card.versions["device"] == detect().describe()
    assert card.test is not None
    assert study.user_attrs["export"]["test_accuracy"] == card.test.accuracy
    assert study.user_attrs["export"]["card_artifact"] == exported.result.card_artifact


def test_the_seed_network_is_exported_first_and_set_beside_the_winner(exported: Exported) -> None:
    baseline = ModelCard.read(exported.out.with_name("smoke-trial0") / "model.keras")
    assert isinstance(baseline, ExportCard) and baseline.trial == 0 and baseline.seed_network
    assert baseline.baseline is not None and baseline.baseline.trial == 0  # its own baseline
    assert baseline.baseline.errors_saved == 0 and baseline.baseline.paired is None
    assert baseline.ensemble is not None and len(baseline.ensemble.scores) == 2
    # The same recipe rules: the seed's hyperparameters, epochs x the same epoch_scale.
    assert baseline.training is not None and exported.card.training is not None
    assert baseline.training.epoch_scale == exported.card.training.epoch_scale
    against, test = exported.card.baseline, exported.card.test
    assert against is not None and baseline.test is not None and test is not None
    assert against.trial == 0 and against.test_errors == baseline.test.errors
    assert against.errors_saved == against.test_errors - test.errors
    study = optuna.load_study(study_name="smoke", storage=exported.storage)
    assert set(study.user_attrs[StudyKey.EXPORTS]) == {"0", str(exported.trial)}
    # Paired on the same images with the baseline's first network, and seeds against seeds.
    first = TestPredictions.load(exported.out.with_name("smoke-trial0")).member(0)
    assert against.paired == paired_comparison(TestPredictions.load(exported.out), first, seed=42)
    assert baseline.ensemble is not None and exported.card.ensemble is not None
    assert against.seeds_compared == mean_difference(
        [s.errors or 0 for s in exported.card.ensemble.scores],
        [s.errors or 0 for s in baseline.ensemble.scores],
    )
    note = get_note(study)
    assert f"**Against the baseline (one network):** {against.paired.sentence()}" in note
    assert f"**Did tuning help?** {against.seeds_compared.sentence()}" in note


def test_the_shipped_ensemble_is_the_mean_of_its_members_each_tested_once(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card, predictions = exported.card, TestPredictions.load(exported.out)
    assert card.ensemble is not None and card.test is not None and predictions.members is not None
    assert [(s.trial, s.seed) for s in card.ensemble.scores] == [
        (exported.trial, seed) for seed in (42, 43)
    ]
    assert [s.errors for s in card.ensemble.scores] == [
        predictions.member(i).errors for i in range(2)
    ]
    np.testing.assert_allclose(
        predictions.probabilities, predictions.members.mean(axis=0), atol=1e-5
    )
    assert card.ensemble.curve == [predictions.member(0).errors, predictions.errors]
    assert card.test.errors == predictions.errors
    model = load_model_file(exported.out / "model.keras")  # safe_mode=True
    assert [m.name for m in ensemble_members(model)] == ["member_0", "member_1"]
    assert card.param_count == model.count_params()
    # The file holds the members' weights, not their optimizers' state (which would triple it).
    weights = 4 * model.count_params()  # float32
    assert (exported.out / "model.keras").stat().st_size < 1.1 * weights + 100_000
    # `tuning predict` runs it like any network, with the digits' class names.
    with np.load(exported.data) as data:
        Image.fromarray(data["x_test"][0]).save(tmp_path / "digit.png")
    assert main(["predict", str(exported.out / "model.keras"), str(tmp_path / "digit.png")]) == 0
    path, label, probability = capsys.readouterr().out.split()
    # What the ensemble itself says of the picture made MNIST-like, printed to 4 places.
    expected = model.predict(prepare_image(tmp_path / "digit.png")[None, ..., None], verbose=0)[0]
    assert path == str(tmp_path / "digit.png") and card.class_names is not None
    assert label == card.class_names[int(expected.argmax())]
    assert float(probability) == pytest.approx(float(expected.max()), abs=1e-4)


def test_the_summary_says_how_the_winner_did_beside_the_baseline(exported: Exported) -> None:
    card = exported.card
    assert card.test is not None and card.baseline is not None
    lines = export_summary(card, exported.out).splitlines()
    assert lines[0] == f"Exported trial #{exported.trial} of study smoke to {exported.out}/"
    assert f"test accuracy {card.test.accuracy:.4f} ({card.test.errors} errors in 500)" in lines[1]
    assert card.ensemble is not None and card.baseline.paired and card.baseline.seeds_compared
    assert lines[2] == (
        f"  Keras backend tensorflow on {detect().describe()}; formats: {', '.join(FORMATS)}"
    )
    alone = ", ".join(str(s.errors) for s in card.ensemble.scores)
    assert lines[3].startswith(f"  An ensemble of 2 seeds; alone they make {alone} errors")
    assert lines[4] == (
        f"  Against the baseline (trial #0, one network): {card.baseline.paired.sentence()}"
    )
    assert lines[5] == f"  Did tuning help? {card.baseline.seeds_compared.sentence()}"


def test_the_card_names_the_cost_of_what_it_ships_beside_the_baseline(exported: Exported) -> None:
    card, cost = exported.card, exported.card.cost
    baseline = ModelCard.read(exported.out.with_name("smoke-trial0") / "model.keras")
    assert isinstance(baseline, ExportCard) and baseline.cost and baseline.cost.model
    assert cost is not None and cost.model is not None and card.baseline is not None
    assert cost.machine == detect().describe()
    # Counted from the shipped ensemble: its two members and their mean (2 x 10 outputs).
    model = load_model_file(exported.out / "model.keras")
    flops = [count_flops(member)[0] or 0 for member in ensemble_members(model)]
    assert cost.model.params == card.param_count == model.count_params()
    assert cost.model.flops == sum(flops) + 2 * 10 and len(flops) == 2
    assert baseline.cost.model.flops == 2 * 22_896_588 + 2 * 10  # two seed networks
    assert cost.model.latency == cost.formats[0].latency  # the Keras file's
    # The baseline's card sets nothing beside itself; the winner's sets the baseline's cost,
    # as the study recorded it, beside its own, with the verdict at the default margin.
    assert (baseline.cost.baseline, baseline.cost.versus, baseline.cost.verdict) == (None,) * 3
    assert cost.baseline == baseline.cost.model and card.baseline.cost is None
    # Each file the baseline wrote, as its export checked it, beside this model's files.
    assert cost.baseline_formats == baseline.cost.formats and card.baseline.formats is None
    paired = card.baseline.paired
    assert paired is not None and cost.versus == tradeoff_sentence(
        cost.model, cost.baseline, paired
    ) + fastest_sentence(cost.formats, baseline.cost.formats)
    assert "; fastest file: " in cost.versus
    assert (cost.margin, cost.verdict) == (10, verdict(paired, 10))
    study = optuna.load_study(study_name="smoke", storage=exported.storage)
    assert study.user_attrs[StudyKey.EXPORTS]["0"]["cost"] == to_json(baseline.cost.model)
    lines = export_summary(card, exported.out).splitlines()
    assert f"  Against the baseline network's cost: {cost.versus}: {cost.verdict}" in lines


def test_exporting_the_trial_again_trains_nothing_it_has_kept(
    exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline's export is stored on the study and the members are kept beside the
    export, so a second export of the same trial (here to another folder beside the first)
    trains no network and ships the same ensemble beside the same baseline."""
    monkeypatch.setattr(recipes, "train", lambda *a, **k: pytest.fail("trained again"))
    storage = copy_study(exported.storage, tmp_path)  # with the baseline's export stored
    again = export_study(
        load_spec(SMOKE), storage=storage, data=exported.data,
        out=exported.out.with_name("smoke-again"), trial=exported.trial, seeds=2,
    )  # fmt: skip
    assert again.card.ensemble == exported.card.ensemble
    assert again.card.baseline == exported.card.baseline
    assert not exported.out.with_name("smoke-again-trial0").exists()
    shutil.rmtree(again.out_dir)


def test_export_takes_the_best_trial_of_the_highest_rung_or_the_one_asked_for(
    tmp_path: Path,
) -> None:
    """Drawn with ask/tell: a pruned trial that led the cheap rung never wins over one scored
    on the top rung, and --trial refuses trials that never finished a rung."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    spec = load_spec(SMOKE)
    study, _ = open_study(spec, storage=storage, data_sha256="a" * 64)
    scores = [[0.90, 0.95], [0.99], [0.92, 0.96], [0.91, 0.93]]
    for row in scores:
        add_rung_trial(study, row, rungs=2)
    study.ask()  # still running
    _, best = load_exportable_study(spec, storage)
    assert best.number == 2  # not #1, whose 0.99 came from the cheaper rung
    assert load_exportable_study(spec, storage, trial=1)[1].number == 1
    with pytest.raises(ExportError, match=r"^trial: trial #4 .* is RUNNING without a finished"):
        load_exportable_study(spec, storage, trial=4)
    with pytest.raises(
        ExportError, match=r"^trial: study .smoke. has trials 0\.\.4\. Received: trial=9"
    ):
        load_exportable_study(spec, storage, trial=9)


def test_card_test_accuracy_equals_a_fresh_evaluation(exported: Exported) -> None:
    model = keras.saving.load_model(exported.out / "model.keras", safe_mode=True)
    with np.load(exported.data) as data:
        x, y = data["x_test"], data["y_test"]
    _, accuracy = model.evaluate(x[..., None], y, verbose=0)
    assert exported.card.test is not None
    assert accuracy == pytest.approx(exported.card.test.accuracy, abs=1e-6)
    assert exported.card.test.errors == round((1 - accuracy) * len(y))
    # Augmentation lives in the input pipeline: the served model has no random layers.
    assert not [layer for layer in model.layers if type(layer).__name__.startswith("Random")]


def test_each_format_is_checked_on_the_test_images_and_timed_on_the_card(
    exported: Exported,
) -> None:
    card = exported.card
    assert card.cost is not None and card.test is not None
    checks = card.cost.formats
    assert [c.format for c in checks] == list(FORMATS)
    assert [c.file for c in checks] == [FILES[f] for f in FORMATS]
    assert [c.test_errors for c in checks] == [card.test.errors] * len(FORMATS)
    assert checks[0].max_abs_diff is None  # the Keras model is the reference
    assert all(
        c.max_abs_diff is not None and c.max_abs_diff <= PARITY_TOLERANCE for c in checks[1:]
    )
    assert all(c.latency.batch1_ms > 0 and c.latency.batch256_ms > 0 for c in checks)
    # The published files are the ones checked: the ONNX file makes the card's test errors.
    with np.load(exported.data) as data:
        x, y = data["x_test"][..., None], data["y_test"]
    probs = run_in_batches(load_runner(exported.out / FILES["onnx"]), x)
    assert int(np.sum(probs.argmax(axis=1) != y)) == card.test.errors


def test_a_format_whose_extra_is_missing_is_refused_before_training(
    exported: Exported,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Asked for by the flag or by the study file, in one line naming the install."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: import refused
    monkeypatch.setattr(recipes, "train", lambda *a, **k: pytest.fail("trained anyway"))
    common = ["--storage", exported.storage, "--data", str(exported.data)]
    out = ["--out", str(tmp_path / "m")]
    assert main(["export", str(SMOKE), *common, *out, "--formats", "onnx"]) == 2
    needs = "writing onnx needs onnxruntime, not installed here; install with "
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --formats: {needs}pip install 'tuning[onnx]'. Received: formats=['onnx']"
    ]
    study = tmp_path / "smoke.toml"
    study.write_text(SMOKE.read_text() + '\n[export]\nformats = ["keras", "onnx"]\n')
    assert main(["export", str(study), *common, *out]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {study}: 'export.formats': {needs}pip install 'tuning[onnx]'. "
        "Received: formats=['keras', 'onnx']"
    ]
    assert not (tmp_path / "m").exists()


def test_savedmodel_serves_the_same_probabilities(exported: Exported) -> None:
    import tensorflow as tf

    with np.load(exported.data) as data:
        x = data["x_test"][:16, ..., None].astype("float32")
    loaded = tf.saved_model.load(str(exported.out / "saved_model"))  # keep it: serve needs it
    served = loaded.serve(tf.constant(x))
    expected = load_model_file(exported.out / "model.keras").predict(x, verbose=0)
    np.testing.assert_allclose(np.asarray(served), expected, atol=1e-5)


def test_model_card_and_plots_are_artifacts_of_the_exported_trial(exported: Exported) -> None:
    study = optuna.load_study(study_name="smoke", storage=exported.storage)
    # Where optuna-dashboard looks for the artifacts of a finished trial (see tuning.artifacts).
    prefix = f"{DASHBOARD_TRIAL_ARTIFACT_PREFIX}{study.trials[exported.trial]._trial_id}:"
    attrs = study._storage.get_study_system_attrs(study._study_id)
    metas = [json.loads(v) for k, v in attrs.items() if k.startswith(prefix)]
    by_name = {m["filename"]: m["artifact_id"] for m in metas}
    # The card lists every artifact uploaded before it; the card itself is one too.
    ids = {**exported.card.artifacts, "model_card.json": exported.result.card_artifact}
    files = {"model.keras", "config.json", "test_predictions.npz", *PLOTS}
    assert files == set(exported.card.artifacts)
    assert by_name == ids
    stored = exported.artifacts / ids["model.keras"]
    assert stored.read_bytes() == (exported.out / "model.keras").read_bytes()
    stored_card = exported.artifacts / ids["model_card.json"]
    assert stored_card.read_bytes() == (exported.out / "model_card.json").read_bytes()


def test_an_interrupted_export_leaves_the_previous_one_and_resumes_its_members(
    exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a third seed trains: the published export is untouched, and the next run
    trains only that seed, taking the two finished ones from their folder."""
    before = {p.name: p.read_bytes() for p in exported.out.iterdir() if p.is_file()}
    storage = copy_study(exported.storage, tmp_path)
    real, calls = recipes.train, list[tuple[int, recipes.Recipe, int]]()

    def train(model: Any, recipe: recipes.Recipe, x: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        calls.append((kwargs["seed"], recipe, len(x)))
        if len(calls) == 1:
            raise KeyboardInterrupt  # the user gives up half-way
        return real(model, recipe, x, *args, **kwargs)

    monkeypatch.setattr(recipes, "train", train)
    options: dict[str, Any] = dict(
        storage=storage,
        data=exported.data,
        out=exported.out,
        trial=exported.trial,
        seeds=3,
        baseline=False,
    )
    with pytest.raises(KeyboardInterrupt):
        export_study(load_spec(SMOKE), **options)
    after = {p.name: p.read_bytes() for p in exported.out.iterdir() if p.is_file()}
    assert after == before
    assert _hidden(exported.out.parent) == [".smoke.members"]  # no staging left behind
    # Seeds 42 and 43 were kept; seed 44 trains by the trial's own recipe on all 2,000 images.
    assert exported.card.training is not None
    assert calls == [(44, exported.card.training.recipe, 2000)]
    result = export_study(load_spec(SMOKE), **options)
    assert calls == [(44, exported.card.training.recipe, 2000)] * 2
    assert result.card.ensemble is not None and exported.card.ensemble is not None
    assert result.card.ensemble.scores[:2] == exported.card.ensemble.scores


@pytest.mark.faults
def test_a_damaged_kept_member_is_trained_again_and_the_export_says_so(
    exported: Exported, tmp_path: Path
) -> None:
    """The fault suite's damaged member: a kept member's network is cut short after it was
    written (a disk that filled, a killed copy). The next export succeeds: it says it trains
    that member again, naming the file, keeps the other, sets the stored baseline beside it
    again, and ships the same test errors for the same member (the same seed, on the same CPU,
    trains the same network)."""
    storage = copy_study(exported.storage, tmp_path)  # with the baseline's export stored
    out = tmp_path / "models" / "smoke"
    members = members_dir(out, "smoke")
    shutil.copytree(members_dir(exported.out, "smoke"), members)
    kept, damaged = (members / f"trial{exported.trial}-seed{seed}" for seed in (42, 43))
    network = damaged / "model.keras"
    network.write_bytes(network.read_bytes()[: network.stat().st_size // 2])
    said: list[str] = []
    result = export_study(
        load_spec(SMOKE), storage=storage, data=exported.data, out=out, trial=exported.trial,
        seeds=2, log=said.append,
    )  # fmt: skip
    assert result.estimate is not None and result.estimate.kept == 1
    assert [(n.trial, n.seed) for n in result.estimate.networks] == [(exported.trial, 43)]
    assert exported.card.ensemble is not None and result.card.ensemble is not None
    errors = [s.errors for s in exported.card.ensemble.scores]
    assert [line for line in said if line.startswith("member ")] == [
        f"member 1/2: trial #{exported.trial}, seed 42, kept from {kept} ({errors[0]} test errors)",
        f"member 2/2: trial #{exported.trial}, seed 43: kept file {network} does not match its "
        "recorded sha256 (damaged after it was written); training it again",
    ]
    assert not [line for line in said if "baseline" in line]  # the stored one, verified
    assert [s.errors for s in result.card.ensemble.scores] == errors
    assert result.card.baseline == exported.card.baseline
    record = json.loads((damaged / "member.json").read_text())
    assert record["files"]["model.keras"] == file_sha256(network)  # whole again, and recorded


def test_missing_study_and_database_are_clear_errors(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[study]\nname = "never-run"\n')
    with pytest.raises(
        ExportError, match=r"study 'never-run' .* not found .* Stored studies: smoke"
    ):
        export_study(load_spec(other), storage=exported.storage, data=exported.data)
    missing_db = f"sqlite:///{tmp_path / 'absent.db'}"
    assert main(["export", str(SMOKE), "--storage", missing_db, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --storage: no study database at ") and "absent.db" in err
    assert not (tmp_path / "absent.db").exists()  # nothing created by looking


def test_a_study_without_a_completed_trial_is_refused(tmp_path: Path, mnist_npz: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    study = optuna.create_study(study_name="smoke", storage=storage)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    with pytest.raises(ExportError, match="has no trial that finished a rung yet"):
        export_study(load_spec(SMOKE), storage=storage, data=mnist_npz)


def test_unwritable_output_is_refused_before_training(
    exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(recipes, "train", lambda *a, **k: pytest.fail("trained anyway"))
    with pytest.raises(ExportError, match=r"^out: .*a-file/models: cannot write to"):
        export_study(
            load_spec(SMOKE), storage=exported.storage, data=exported.data, out=blocker / "models"
        )


@pytest.mark.parametrize(
    ("flag", "value", "line"),
    [
        ("--seeds", "0", "--seeds: must be an integer in [1, 50]. Received: seeds=0"),
        ("--seeds", "51", "--seeds: must be an integer in [1, 50]. Received: seeds=51"),
        ("--epoch-scale", "25", "--epoch-scale: must be a number in (0, 20]. Received: "
         "epoch_scale=25.0"),
        ("--formats", "keras,onyx", "--formats: 'onyx' is not a format; expected any of: keras, "
         "saved_model, onnx, litert. Received: formats=['keras', 'onyx']"),
    ],
)  # fmt: skip
def test_bad_export_options_are_one_line_naming_the_flag_before_training(
    exported: Exported,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    line: str,
) -> None:
    """The flags obey the study file's own [export] rules, and say so in the flag's name."""
    monkeypatch.setattr(recipes, "train", lambda *a, **k: pytest.fail("trained anyway"))
    common = ["--storage", exported.storage, "--data", str(exported.data)]
    out = ["--out", str(tmp_path / "m")]
    assert main(["export", str(SMOKE), *common, *out, flag, value]) != 0
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {line}"]
    assert not (tmp_path / "m").exists()


def test_other_training_data_is_refused(exported: Exported, tmp_path: Path) -> None:
    with np.load(exported.data) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["x_train"] = arrays["x_train"][::-1].copy()
    changed = tmp_path / "changed.npz"
    np.savez(changed, **arrays)
    with pytest.raises(StudyMismatchError, match="was made with data_sha256="):
        export_study(load_spec(SMOKE), storage=exported.storage, data=changed)


def test_a_study_stored_before_tuned_recipes_is_refused(exported: Exported, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    study = optuna.create_study(study_name="smoke", storage=storage, direction="maximize")
    old = {"subset": 2000, "folds": 2, "max_epochs": 1, "seed": 42}
    study.set_user_attr("protocol", {**old, "data_sha256": file_sha256(exported.data)})
    study.add_trial(optuna.trial.create_trial(value=0.9, intermediate_values={1: 0.9}))
    with pytest.raises(StudyMismatchError) as info:
        export_study(load_spec(SMOKE), storage=storage, data=exported.data, out=tmp_path / "m")
    assert "earlier tuning (protocol 1:" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "m").exists()


def _full_mnist() -> Path:
    path = Path(os.environ.get("TUNING_MNIST", "/nonexistent"))
    if not path.is_file():
        pytest.skip("needs the full MNIST file: set TUNING_MNIST")
    return path


@pytest.mark.parametrize(
    ("size", "train_images", "test_images", "least_accuracy"),
    [
        ("reduced", 2_000, 500, 0.85),  # CI runs this form on every submission
        pytest.param("full", 60_000, 10_000, 0.98, marks=pytest.mark.slow),  # ~3 minutes
    ],
)
def test_cli_study_then_export(
    size: str,
    train_images: int,
    test_images: int,
    least_accuracy: float,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tuning study` + `tuning export` as a user runs them, on a slice of MNIST (the session's
    smoke run is the study) or all of it; the seed network, exported at twice its epochs."""
    if size == "reduced":
        run: SmokeRun = request.getfixturevalue("smoke_run")
        data, storage = str(run.data), copy_study(run.storage, tmp_path)
        common = ["--storage", storage, "--data", data]
    else:
        data, storage = str(_full_mnist()), f"sqlite:///{tmp_path / 'studies.db'}"
        common = ["--storage", storage, "--data", data]
        assert main(["study", str(SMOKE), *common, "--trials", "1", "--no-progress"]) == 0
    out = tmp_path / "models"
    flags = ["--out", str(out), "--trial", "0", "--epoch-scale", "2"]
    assert main(["export", str(SMOKE), *common, *flags]) == 0
    card = ModelCard.read(out / "model.keras")
    assert isinstance(card, ExportCard) and card.test is not None and card.training is not None
    assert f"test accuracy {card.test.accuracy:.4f}" in capsys.readouterr().out
    assert card.training.images == train_images and card.test.images == test_images
    assert card.training.recipe is not None and card.training.recipe.epochs == 2  # 1 x 2
    assert card.test.accuracy > least_accuracy


def test_data_without_a_test_split_is_exported_without_a_test_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers import letter_study

    path = letter_study(tmp_path)
    common = ["--storage", f"sqlite:///{tmp_path / 'studies.db'}"]
    assert main(["study", str(path), *common, "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "model"
    assert main(["export", str(path), *common, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "has no test split: no test accuracy is reported" in printed.err
    assert "no test split, so no test accuracy" in printed.out
    card = ModelCard.read(out / "model.keras")
    assert isinstance(card, ExportCard) and card.test is None and card.baseline is None
    assert card.class_names == ["alpha", "beta", "gamma"]
    assert card.input.preprocess == "tuning.images.preprocess.prepare_image"
    assert not (out / "confusion_matrix.png").exists()
