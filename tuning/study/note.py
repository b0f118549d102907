"""The note `tuning study` shows in optuna-dashboard: how the study was made, written from its
user attrs on every run, so it always matches the stored protocol; with an `[objective]` other
than accuracy alone, its limits, its infeasible trials and its Pareto front."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuning.notes import save_note, space_table
from tuning.protocol import DEFAULT_OBJECTIVE, Objective
from tuning.records import ExportRecord, StudyKey, TrialKey, format_flops, format_ms
from tuning.study.config import Rung
from tuning.study.rungs import (
    DOMINATORS,
    RungCorrelation,
    highest_rung,
    pareto_front,
    rung_correlations,
    rung_scores,
    rung_step,
)
from tuning.study.trial_cost import trial_costs
from tuning.typed_json import RecordError, from_json

EXPORT_COMMAND = "tuning export {study_file}"


def _protocol_section(protocol: Mapping[str, Any]) -> list[str]:
    ladder = [Rung(**rung) for rung in protocol.get("rungs") or []]
    reports = (
        "- **Intermediate values:** rung r reports its score at step 3^r; the trial's value is its "
        "score on the last rung. Per-rung scores are the user attribute `rungs`; the folds of the "
        "last rung finished are `fold_accuracies`."
    )
    if stored_objective(protocol).cost:
        reports = (
            "- **Intermediate values:** none (Optuna takes no reports in a study of two "
            "directions); per-rung scores are the user attribute `rungs`, the folds of the last "
            "rung finished `fold_accuracies`."
        )
    lines = [
        "### Fidelity rungs",
        "",
        "A trial climbs the rungs in order; the pruner (with two directions, the dominance stop) "
        "decides after each rung whether it goes on (the seed network and the study file's "
        "starting points always do). A rung's score "
        "is the mean validation accuracy over the stratified folds it runs "
        f"(seed {protocol.get('seed')}, the same folds for every trial), with the trial's own "
        "training recipe at the rung's share of its epochs:",
        "",
        "| rung | step | scored by |",
        "| --- | --- | --- |",
        *(f"| {i} | {rung_step(i)} | {rung.describe()} |" for i, rung in enumerate(ladder)),
        "",
        reports,
        f"- **Epochs:** a recipe asks for up to **{protocol.get('max_epochs')}**.",
        "- **Export** retrains the best feasible trial at the highest rung any trial reached "
        "(or the one `[export] pick` chooses).",
    ]
    if protocol.get("hypermodel"):
        lines.append(
            f"- **HyperModel:** `{protocol['hypermodel']}`, the study file's own code (imported by "
            "`tuning study` and `tuning export`, never by the dashboard)"
        )
    if protocol.get("class_names"):
        lines.append(f"- **Classes:** {', '.join(protocol['class_names'])}")
    if protocol.get("space_fingerprint"):
        lines.append(f"- **Search-space fingerprint:** `{protocol['space_fingerprint']}`")
    return lines


def correlation_section(correlations: Sequence[RungCorrelation]) -> list[str]:
    """How well each rung's ranking predicted the next one's, as a markdown list."""
    if not correlations:
        return []
    return [
        "### Does each rung predict the next?",
        "",
        "Spearman rank correlation between the scores of the trials that finished both rungs "
        "(only promoted trials reach the upper rung):",
        "",
        *(f"- {c.describe()}" for c in correlations),
    ]


def objective_section(objective: Objective, trials: Sequence[FrozenTrial]) -> list[str]:
    """The objective, its limits and (with two directions) the Pareto front of `trials`."""
    lines = ["### Objective", "", f"**{objective.describe().capitalize()}.**", ""]
    if objective.cost:
        lines.append(
            "- A Pareto front: Optuna's pruners do not work with two objectives, so a trial stops "
            f"after a rung below the top when {DOMINATORS} trials that finished that rung beat "
            f"it there on both CV accuracy and {objective.cost} (the dominance stop)."
        )
    if objective.limits:
        finished = [t for t in trials if t.state.is_finished()]
        over = sum(TrialKey.INFEASIBLE in t.user_attrs for t in finished)
        lines.append(
            "- A network over a limit is infeasible: its cost is measured, it stops before any "
            "training (PRUNED, the limit it broke in the user attribute `infeasible`; the seed "
            "network is scored anyway) and export never chooses it: "
            f"{over} of {len(finished)} finished trial(s) so far."
        )
    lines.append(
        "- Each trial's cost is measured before it trains, as user attributes: `param_count`, "
        "`flops` (forward, per image), `latency_ms` and `latency_b256_ms` (CPU milliseconds per "
        "image at batch 1 and 256, medians) and `latency_threads`."
    )
    if objective.cost:
        lines += front_section(trials, objective.cost)
    return lines


def front_section(trials: Sequence[FrozenTrial], cost: str) -> list[str]:
    """The Pareto front at the highest rung reached, as a markdown table, cheapest first."""
    front = pareto_front(trials, cost)
    if not front:
        return []
    top = highest_rung(front[0])
    rows = []
    for trial in front:
        costs = trial_costs(trial)
        flops = format_flops(costs["flops"]) if "flops" in costs else "unknown"
        latency = format_ms(costs["latency_ms"]) if "latency_ms" in costs else "-"
        params = f"{int(costs['params']):,}" if "params" in costs else "-"
        score = rung_scores(trial)[top]
        rows.append(f"| {trial.number} | {score:.4f} | {params} | {flops} | {latency} |")
    return [
        "",
        f"**Pareto front at rung {top}** ({len(front)} points): export one with "
        f'`tuning export --trial N`, or by a rule, `--pick "fewest {cost} within 0.1 points"`.',
        "",
        "| trial | CV accuracy | params | FLOPs | ms/img (batch 1) |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]


def stored_objective(protocol: Mapping[str, Any]) -> Objective:
    """The objective a stored protocol names (the default where it names none)."""
    try:
        return from_json(Objective, protocol.get("objective") or {})
    except RecordError:
        return DEFAULT_OBJECTIVE


def study_note(
    study_name: str,
    attrs: Mapping[str, Any],
    devices: Mapping[str, int] | None = None,
    correlations: Sequence[RungCorrelation] = (),
    trials: Sequence[FrozenTrial] = (),
) -> str:
    """Markdown for a study made by `tuning study`, from its user attrs, the `devices` its
    trials ran on (device name -> trials; 0 for the run about to start) and its `trials` (for
    the objective's section, when it is not accuracy alone).

    Sections whose attributes are missing are left out, so any study gets a sensible note.
    """
    study_file = attrs.get(StudyKey.STUDY_FILE)
    lines = [f"## {study_name}", ""]
    lines.append(
        f"Written by `tuning study` from `{study_file}` on every run; edits made here are "
        "replaced on the next run."
        if study_file
        else "Written by `tuning`; edits made here may be replaced."
    )
    protocol = attrs.get(StudyKey.PROTOCOL)
    if isinstance(protocol, Mapping):
        objective = stored_objective(protocol)
        if objective != DEFAULT_OBJECTIVE:
            lines += ["", *objective_section(objective, trials)]
        lines += ["", *_protocol_section(protocol)]
        if correlations:
            lines += ["", *correlation_section(correlations)]
        if protocol.get("data_sha256"):
            lines += [
                "",
                "### Data",
                "",
                f"- **Training file sha256:** `{protocol['data_sha256']}`",
                "- A resumed run checks this hash, so every trial here saw the same images.",
            ]
    space = attrs.get(StudyKey.SPACE)
    if isinstance(space, list) and space:
        lines += ["", f"### Search space ({len(space)} hyperparameters)", "", space_table(space)]
    if study_file:
        lines += [
            "",
            "### Export",
            "",
            "Retrain the best trial at the top rung by its own recipe on the full training set, "
            "test it once beside the seed network, and attach the model and plots to that trial "
            "(they appear under its artifacts here):",
            "",
            "```",
            EXPORT_COMMAND.format(study_file=study_file),
            "```",
        ]
    lines += _export_section(attrs.get(StudyKey.EXPORT))
    if devices:
        lines += ["", "### Devices", ""]
        lines += [f"- {name}: {n} trial(s) so far" for name, n in devices.items()]
    versions = attrs.get(StudyKey.VERSIONS)
    if isinstance(versions, Mapping) and versions:
        listed = ", ".join(f"{k} {v}" for k, v in versions.items())
        lines += ["", "### Versions", "", listed]
    return "\n".join(lines) + "\n"


def _export_section(value: Any) -> list[str]:
    """The latest export's test score, set beside the baseline's, as markdown lines."""
    try:
        record = ExportRecord.from_attr(dict(value)) if isinstance(value, Mapping) else None
    except RecordError:
        return []
    if record is None or record.test_errors is None:
        return []
    members = f", an ensemble of {record.seeds}" if record.seeds > 1 else ""
    lines = [
        "",
        "### Latest export",
        "",
        f"- **Trial #{record.trial}**{members}: {record.test_errors} test errors in "
        f"{record.test_images} (accuracy {record.test_accuracy:.4f}), in `{record.out}`",
    ]
    if record.versus:
        lines.append(f"- **Against the baseline (one network):** {record.versus}")
    if record.tuning_gain:
        lines.append(f"- **Did tuning help?** {record.tuning_gain}")
    return lines


def trial_devices(study: optuna.Study, current: str | None = None) -> dict[str, int]:
    """How many finished trials ran on each device (trial attribute `versions.device`), with
    `current`, the device of the run about to start, listed too."""
    counts: dict[str, int] = {}
    if current:
        counts[current] = 0
    for trial in study.get_trials(deepcopy=False):
        device = (trial.user_attrs.get(TrialKey.VERSIONS) or {}).get("device")
        if device and trial.state.is_finished():
            counts[device] = counts.get(device, 0) + 1
    return counts


def write_study_note(study: optuna.Study, *, device: str | None = None) -> str:
    """Save `study_note` of the study's user attrs and its trials' devices (with `device` for
    this run) as the study's dashboard note; returns the markdown saved."""
    rungs = len((study.user_attrs.get(StudyKey.PROTOCOL) or {}).get("rungs") or [])
    trials = study.get_trials(deepcopy=False)
    correlations = rung_correlations(trials, rungs=rungs)
    devices = trial_devices(study, device)
    text = study_note(study.study_name, study.user_attrs, devices, correlations, trials)
    return save_note(study, text)
