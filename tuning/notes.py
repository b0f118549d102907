"""The study note shown in optuna-dashboard: how a study was made, written from its user attrs.

`tuning study` rewrites the note on every run, so it always matches the stored protocol. Other
studies (e.g. a transfer study with different attributes) can pass their own markdown `body`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from tuning.config import Rung
from tuning.records import StudyKey, TrialKey
from tuning.rungs import RungCorrelation, rung_correlations, rung_step

EXPORT_COMMAND = "tuning export {study_file}"


def _show(value: Any) -> str:
    """A value as a reader expects it: strings bare, the rest as JSON (true, null, 0.5)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _cell(value: Any) -> str:
    """A markdown table cell: pipes escaped, newlines flattened."""
    return _show(value).replace("|", "\\|").replace("\n", " ")


def describe_hyperparameter(config: Mapping[str, Any]) -> str:
    """The values one KerasTuner hyperparameter config can take, in a few words."""
    kind = config.get("class")
    if kind in ("Int", "Float"):
        text = f"{config.get('min_value')} … {config.get('max_value')}"
        step = config.get("step")
        if step is not None and not (kind == "Int" and step == 1):
            text += f", step {step}"
        if config.get("sampling") not in (None, "linear"):
            text += f", {config['sampling']}"
        return text
    if kind == "Choice":
        return ", ".join(_show(v) for v in config.get("values", []))
    if kind == "Boolean":
        return "true, false"
    if kind == "Fixed":
        return f"always {_show(config.get('value'))}"
    rest = {k: v for k, v in config.items() if k not in ("class", "name", "conditions")}
    return json.dumps(rest, default=str)


def space_table(space: list[Mapping[str, Any]]) -> str:
    """The search space as a markdown table (name, kind, values, default)."""
    rows = ["| hyperparameter | kind | values | default |", "|---|---|---|---|"]
    for config in space:
        name = str(config.get("name", "?"))
        if config.get("conditions"):
            name += " (conditional)"
        rows.append(
            f"| {_cell(name)} | {_cell(config.get('class', '?'))} | "
            f"{_cell(describe_hyperparameter(config))} | {_cell(config.get('default'))} |"
        )
    return "\n".join(rows)


def _protocol_section(protocol: Mapping[str, Any]) -> list[str]:
    ladder = [Rung(**rung) for rung in protocol.get("rungs") or []]
    lines = [
        "### Fidelity rungs",
        "",
        "A trial climbs the rungs in order; the pruner decides after each rung whether it goes "
        "on (the seed network and the study file's starting points always do). A rung's score "
        "is the mean validation accuracy over the stratified folds it runs "
        f"(seed {protocol.get('seed')}, the same folds for every trial), with the trial's own "
        "training recipe at the rung's share of its epochs:",
        "",
        "| rung | step | scored by |",
        "| --- | --- | --- |",
        *(f"| {i} | {rung_step(i)} | {rung.describe()} |" for i, rung in enumerate(ladder)),
        "",
        "- **Intermediate values:** rung r reports its score at step 3^r; the trial's value is its "
        "score on the last rung. Per-rung scores are the user attribute `rungs`; the folds of the "
        "last rung finished are `fold_accuracies`.",
        f"- **Epochs:** a recipe asks for up to **{protocol.get('max_epochs')}**.",
        "- **Export** retrains the best trial at the highest rung any trial reached.",
    ]
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


def study_note(
    study_name: str,
    attrs: Mapping[str, Any],
    devices: Mapping[str, int] | None = None,
    correlations: Sequence[RungCorrelation] = (),
) -> str:
    """Markdown for a study made by `tuning study`, from its user attrs and the `devices` its
    trials ran on (device name -> trials; 0 for the run about to start).

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
    if devices:
        lines += ["", "### Devices", ""]
        lines += [f"- {name}: {n} trial(s) so far" for name, n in devices.items()]
    versions = attrs.get(StudyKey.VERSIONS)
    if isinstance(versions, Mapping) and versions:
        listed = ", ".join(f"{k} {v}" for k, v in versions.items())
        lines += ["", "### Versions", "", listed]
    return "\n".join(lines) + "\n"


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


def write_study_note(
    study: optuna.Study, body: str | None = None, *, device: str | None = None
) -> str:
    """Save `body` (default: `study_note` of the study's user attrs and its trials' devices, with
    `device` for this run) as the study's dashboard note, replacing the previous one; returns the
    markdown saved."""
    # Imported here: optuna-dashboard pulls in its web framework, which trials never need.
    from optuna_dashboard import get_note, save_note

    text = body
    if text is None:
        rungs = len((study.user_attrs.get(StudyKey.PROTOCOL) or {}).get("rungs") or [])
        correlations = rung_correlations(study.get_trials(deepcopy=False), rungs=rungs)
        text = study_note(
            study.study_name, study.user_attrs, trial_devices(study, device), correlations
        )
    # Re-saving an identical note would only bump its version; skip the write instead.
    if get_note(study) != text:
        save_note(study, text)
    return text
