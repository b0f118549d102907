"""The study note shown in optuna-dashboard: how a study was made, written from its user attrs.

`tuning study` rewrites the note on every run, so it always matches the stored protocol. Other
studies (e.g. a transfer study with different attributes) can pass their own markdown `body`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna

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
    folds, epochs = protocol.get("folds"), protocol.get("max_epochs")
    lines = [
        "### Fold protocol",
        "",
        f"- **Score:** mean validation accuracy over **{folds}**-fold stratified cross-validation "
        f"of **{protocol.get('subset')}** training images (seed {protocol.get('seed')}); the "
        "same folds for every trial. Per-fold scores are the user attribute `fold_accuracies`.",
        f"- **Training:** up to **{epochs}** epoch(s) per fold.",
    ]
    if isinstance(epochs, int) and isinstance(folds, int):
        # The step layout of tuning.study.make_objective, so a reader can decode the curves.
        curve = (
            "- **Intermediate values (pruning curves):** step e is the validation accuracy after "
            f"epoch e+1 of fold 1 (steps 0 to {epochs - 1})"
        )
        if folds > 1:
            curve += (
                f"; step {epochs}+f is the mean accuracy of folds 1 to f+1 "
                f"(steps {epochs} to {epochs + folds - 2})"
            )
        lines.append(curve + ". Under the Wilcoxon pruner, step f is fold f+1's accuracy instead.")
    if protocol.get("space_fingerprint"):
        lines.append(f"- **Search-space fingerprint:** `{protocol['space_fingerprint']}`")
    return lines


def study_note(
    study_name: str, attrs: Mapping[str, Any], devices: Mapping[str, int] | None = None
) -> str:
    """Markdown for a study made by `tuning study`, from its user attrs and the `devices` its
    trials ran on (device name -> trials; 0 for the run about to start).

    Sections whose attributes are missing are left out, so any study gets a sensible note.
    """
    study_file = attrs.get("study_file")
    lines = [f"## {study_name}", ""]
    lines.append(
        f"Written by `tuning study` from `{study_file}` on every run; edits made here are "
        "replaced on the next run."
        if study_file
        else "Written by `tuning`; edits made here may be replaced."
    )
    protocol = attrs.get("protocol")
    if isinstance(protocol, Mapping):
        lines += ["", *_protocol_section(protocol)]
        if protocol.get("data_sha256"):
            lines += [
                "",
                "### Data",
                "",
                f"- **Training file sha256:** `{protocol['data_sha256']}`",
                "- A resumed run checks this hash, so every trial here saw the same images.",
            ]
    space = attrs.get("space")
    if isinstance(space, list) and space:
        lines += ["", f"### Search space ({len(space)} hyperparameters)", "", space_table(space)]
    if study_file:
        lines += [
            "",
            "### Export",
            "",
            "Retrain the best trial on the full training set, test it once and attach the model "
            "and plots to that trial (they appear under its artifacts here):",
            "",
            "```",
            EXPORT_COMMAND.format(study_file=study_file),
            "```",
        ]
    if devices:
        lines += ["", "### Devices", ""]
        lines += [f"- {name}: {n} trial(s) so far" for name, n in devices.items()]
    versions = attrs.get("versions")
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
        device = (trial.user_attrs.get("versions") or {}).get("device")
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
        text = study_note(study.study_name, study.user_attrs, trial_devices(study, device))
    # Re-saving an identical note would only bump its version; skip the write instead.
    if get_note(study) != text:
        save_note(study, text)
    return text
