"""Markdown for optuna-dashboard study notes: the search-space table any study can show, and the
one function that saves a note (only when its text changed)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna


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


def save_note(study: optuna.Study, text: str) -> str:
    """Save `text` as the study's dashboard note, replacing the previous one; returns `text`."""
    # Imported here: optuna-dashboard pulls in its web framework, which trials never need.
    from optuna_dashboard import get_note
    from optuna_dashboard import save_note as save

    # Re-saving an identical note would only bump its version; skip the write instead.
    if get_note(study) != text:
        save(study, text)
    return text
