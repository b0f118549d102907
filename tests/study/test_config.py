from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import DEFAULT_STUDY, SMOKE
from tuning.errors import ConfigError
from tuning.protocol import Rung
from tuning.study.config import ExportSettings, load_spec
from tuning.study.objective_config import PICK_EXPECTED, PickRule
from tuning.typed_json import field_problem


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_shipped_study_files_parse() -> None:
    smoke = load_spec(SMOKE)
    assert (smoke.name, smoke.fidelity.subset, smoke.fidelity.folds) == ("smoke", 2000, 2)
    assert smoke.fidelity.max_epochs == 1 and smoke.budget.trials == 3
    default = load_spec(DEFAULT_STUDY)
    assert default.name == "mnist_cnn" and default.budget.timeout is not None
    ladder = default.fidelity.ladder
    assert len(ladder) == 3 and ladder[-1].subset == 60_000  # the top rung sees every image
    costs = [(r.subset or 60_000) * r.folds_run for r in ladder]
    assert costs == sorted(costs)


def test_defaults_fill_in_and_name_is_the_file_stem(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "[fidelity]\nsubset = 1000\n"))
    assert spec.name == "study"
    assert spec.fidelity.folds == 5  # the documented default k
    assert spec.search.sampler == "tpe" and spec.pruner == "successive_halving"
    assert spec.to_dict()["fidelity"] == {
        "subset": 1000,
        "folds": 5,
        "max_epochs": 15,
        "precision": "float32",
        "rungs": (),
    }
    assert spec.fidelity.ladder == (Rung(subset=1000, folds=5),)  # one rung, every fold


def test_rungs_are_read_in_order_with_their_defaults(tmp_path: Path) -> None:
    text = (
        "[[fidelity.rungs]]\nsubset = 600\nfolds = 3\nrun_folds = 1\nepoch_scale = 0.5\n"
        "[[fidelity.rungs]]\nsubset = 1200\nfolds = 2\n"
        "[export]\nepoch_scale = 2\n"
    )
    spec = load_spec(write(tmp_path, text))
    assert spec.fidelity.ladder == (Rung(600, 3, 1, 0.5), Rung(1200, 2))
    assert spec.fidelity.ladder[-1].subset == 1200 and spec.export.epoch_scale == 2
    protocol = spec.protocol(
        precision="float32", backend="tensorflow", data_sha256="a" * 64, space_fingerprint="f"
    )
    assert protocol.to_attr()["rungs"][0] == {
        "subset": 600,
        "folds": 3,
        "run_folds": 1,
        "epoch_scale": 0.5,
    }
    assert "export" not in protocol.to_attr()  # the export multiplier never invalidates a study


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[fidelity]\nfoldz = 3\n", "unknown key 'fidelity.foldz'; expected one of: subset, folds"),
        ("[fidelty]\nfolds = 3\n", "unknown key 'fidelty'; expected one of: study, data, space"),
        ("[fidelity]\nfolds = 1\n", "'fidelity.folds' must be an integer in 2..20. Received: 1"),
        ("[fidelity]\nsubset = 5\n", "'fidelity.subset' must be an integer >= 10"),
        ("[data]\nsource = ''\n", "'data.source' must be \"mnist\", or the path"),
        ("[data]\nclass_names = ['a', 'a']\n", "'data.class_names' must be a list of at least 2"),
        ("[space]\nhypermodel = 'models'\n", "'space.hypermodel' must be \"module.path:Name\""),
        ("[space]\nmodel = 'a:B'\n", "unknown key 'space.model'"),
        ("[fidelity]\nmax_epochs = true\n", "'fidelity.max_epochs' must be an integer"),
        (
            "[search]\npruner = 'asha'\n",
            "'search.pruner' must be one of successive_halving, hyperband, median, none",
        ),
        (
            "[[fidelity.rungs]]\nsubset = 600\nfolds = 3\nrun_folds = 4\n",
            "'fidelity.rungs[0].run_folds' must be at most its folds (3). Received: 4",
        ),
        (
            "[[fidelity.rungs]]\nsubset = 600\nfolds = 3\n[[fidelity.rungs]]\nsubset = 900\n",
            "'fidelity.rungs[1].folds' is missing (it must be an integer in 2..20). Received: ",
        ),
        (
            "[[fidelity.rungs]]\nsubset = 600\nfolds = 3\nepoch_scale = 0\n",
            "'fidelity.rungs[0].epoch_scale' must be a number in (0, 10]. Received: 0",
        ),
        (
            "[[fidelity.rungs]]\nsubset = 600\nfolds = 3\nfold = 1\n",
            "unknown key 'fidelity.rungs[0].fold'",
        ),
        (
            "[fidelity]\nsubset = 600\n[[fidelity.rungs]]\nsubset = 600\nfolds = 3\n",
            "give either 'fidelity.subset' (one rung) or [[fidelity.rungs]], not both",
        ),
        ("[fidelity]\nrungs = 3\n", "'fidelity.rungs' must be an array of 1 to 5"),
        (
            "[export]\nepochs = 15\n",
            "'export.epochs' is now part of each trial's tuned recipe; the [export] table takes "
            "'epoch_scale' (export epochs = the trial's epochs x epoch_scale), 'seeds' and "
            "'members'",
        ),
        ("[export]\nseeds = 0\n", "'export.seeds' must be an integer in [1, 50]. Received: 0"),
        (
            "[export]\nmembers = 'best'\n",
            "'export.members' must be one of seeds, top. Received: 'best'",
        ),
        (
            "[fidelity]\nprecision = 'float16'\n",
            "'fidelity.precision' must be one of float32, mixed_bfloat16, mixed_float16, auto. "
            "Received: 'float16'",
        ),
        ("[budget]\ntimeout = -5\n", "'budget.timeout' must be a number of seconds > 0"),
        ("[study]\nname = 'a b'\n", "'study.name' must be letters, digits"),
        ("[study]\nenqueue = [1]\n", "'study.enqueue' must be an array of [[study.enqueue]]"),
        ("[fidelity]\nsubset = 100\nfolds = 20\n", "at least 10 images per fold"),
        ("fidelity = 3\n", "'fidelity' must be a table (a JSON object). Received: 3"),
        (
            "[export]\nseeds = true\n",
            "'export.seeds' must be an integer in [1, 50]. Received: True",
        ),
        (
            "[[fidelity.rungs]]\nsubset = 600\nfolds = 'x'\n",
            "'fidelity.rungs[0].folds' must be an integer in 2..20. Received: 'x'",
        ),
        ("[data]\nclass_names = ['a', 1]\n", "'data.class_names' must be a list of at least 2"),
        (
            "[[fidelity.rungs]]\nsubset = 600\nfolds = 3\nrun_folds = 0\n",
            "'fidelity.rungs[0].run_folds' must be an integer in 1..20. Received: 0",
        ),
        ("[fidelity\nfolds = 3\n", "not valid TOML"),
        (
            "[objective]\nlimits = { flopz = 1000 }\n",
            "'objective.limits.flopz' is not a cost; expected one of params, flops, latency_ms",
        ),
        (
            "[objective]\nlimits = { flops = 0 }\n",
            "'objective.limits.flops' must be a number > 0. Received: 0",
        ),
        (
            "[objective]\nlimits = { params = -5.5 }\n",
            "'objective.limits.params' must be a number > 0. Received: -5.5",
        ),
        ("[objective]\nlimits = { flops = true }\n", "'objective.limits.flops' must be a number"),
        (
            "[objective]\ndirections = ['flops', 'accuracy']\n",
            '\'objective.directions\' must be ["accuracy"] or ["accuracy", "<cost>"] with '
            "<cost> one of params, flops, latency_ms. Received: ['flops', 'accuracy']",
        ),
        (
            "[objective]\ndirections = ['accuracy', 'flops', 'params']\n",
            "'objective.directions' must be [\"accuracy\"] or",
        ),
        ("[objective]\ndirections = ['accuracy', 'flopz']\n", "Received: ['accuracy', 'flopz']"),
        ("[objective]\ndirections = []\n", "'objective.directions' must be"),
        (
            "[objective]\ndirections = ['accuracy', 'flops']\n[search]\npruner = 'median'\n",
            "'search.pruner' cannot be used with two directions (Optuna's pruners do not work "
            'with two objectives; leave it out for the dominance stop, or give "none"). '
            "Received: pruner='median', directions=['accuracy', 'flops']",
        ),
        ("[objective]\ngive_up_after = 0\n", "'objective.give_up_after' must be an integer >= 1"),
        ("[objective]\nlimit = { flops = 5 }\n", "unknown key 'objective.limit'"),
        (
            "[export]\npick = 'fewest flopz within 0.1 points'\n",
            '\'export.pick\' must be "best" or "fewest <cost> within <x> points" with <cost> '
            "one of params, flops, latency_ms. Received: 'fewest flopz within 0.1 points'",
        ),
    ],
)
def test_bad_study_files_get_one_line_errors_naming_file_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert expected in message


def test_the_objective_defaults_to_accuracy_and_reads_limits_and_directions(
    tmp_path: Path,
) -> None:
    plain = load_spec(write(tmp_path, ""))
    assert plain.objective.directions == ("accuracy",) and plain.objective.limits == {}
    assert plain.objective.give_up_after == 50 and plain.export.pick == "best"
    assert plain.pruner == "successive_halving"
    protocol = plain.protocol(
        precision="float32", backend="tensorflow", data_sha256="a", space_fingerprint="f"
    )
    assert "objective" not in protocol.to_attr()  # stored as studies were before it existed
    text = (
        "[objective]\ndirections = ['accuracy', 'flops']\nlimits = { params = 20_000 }\n"
        "give_up_after = 7\n[export]\npick = 'fewest  flops within .5 points'\n"
    )
    pareto = load_spec(write(tmp_path, text))
    assert pareto.objective.limits == {"params": 20_000.0} and pareto.objective.give_up_after == 7
    assert pareto.pruner == "dominance"  # Optuna's pruners do not work with two directions
    stored = pareto.protocol(
        precision="float32", backend="tensorflow", data_sha256="a", space_fingerprint="f"
    ).to_attr()["objective"]
    assert stored == {"directions": ["accuracy", "flops"], "limits": {"params": 20_000.0}}
    assert PickRule.parse(pareto.export.pick) == PickRule(cost="flops", within_points=0.5)
    none = load_spec(write(tmp_path, text + "[search]\npruner = 'none'\n"))
    assert none.pruner == "none"  # every trial climbs every rung


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("best", PickRule()),
        ("fewest flops within 0.1 points", PickRule("flops", 0.1)),
        ("fewest params within 1 point", PickRule("params", 1.0)),
        (" fewest  latency_ms within 2. points ", PickRule("latency_ms", 2.0)),
    ],
)
def test_pick_rules_parse_by_their_small_grammar(text: str, rule: PickRule) -> None:
    assert PickRule.parse(text) == rule
    assert PickRule.parse(rule.describe()) == rule


@pytest.mark.parametrize(
    "text", ["", "fewest", "fewest flops", "fewest flops within -1 points", "cheapest", "Best"]
)
def test_a_bad_pick_rule_says_what_a_rule_is(text: str) -> None:
    with pytest.raises(ValueError, match='must be "best" or "fewest <cost> within <x> points"'):
        PickRule.parse(text)
    assert field_problem(ExportSettings, "pick", text) == PICK_EXPECTED


def test_enqueued_starting_points_are_read_in_order(tmp_path: Path) -> None:
    text = "[[study.enqueue]]\nbatch_norm = true\n[[study.enqueue]]\nfilters_0 = 16\n"
    assert load_spec(write(tmp_path, text)).enqueue == ({"batch_norm": True}, {"filters_0": 16})
    assert load_spec(write(tmp_path, "")).enqueue == ()


def test_missing_study_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="study file not found"):
        load_spec(tmp_path / "nope.toml")


def test_a_rung_without_subset_takes_every_image(tmp_path: Path) -> None:
    text = "[[fidelity.rungs]]\nsubset = 600\nfolds = 3\n[[fidelity.rungs]]\nfolds = 2\n"
    assert load_spec(write(tmp_path, text)).fidelity.ladder[-1] == Rung(None, 2)


def test_export_settings_given_another_way_obey_the_study_files_rules() -> None:
    """`tuning export --seeds` and the like are held to the [export] table's own rules."""
    assert field_problem(ExportSettings, "seeds", 3) is None
    assert field_problem(ExportSettings, "seeds", 0) == "an integer in [1, 50]"
    assert field_problem(ExportSettings, "seeds", True) == "an integer in [1, 50]"  # not a count
    assert field_problem(ExportSettings, "epoch_scale", 2) is None  # an integer is a number
    assert field_problem(ExportSettings, "members", "best") == "one of seeds, top"
