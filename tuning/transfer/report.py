"""What a transfer run shows: the grid of held-out predictions and the dashboard note of the
transfer study (its cards are `tuning.transfer.card`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tuning.figures import DPI, MISTAKE
from tuning.notes import space_table
from tuning.transfer.card import NestedCV, TransferDetails, TuningSummary


def prediction_grid(
    images: np.ndarray,
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    path: Path,
    *,
    title: str,
) -> Path:
    """Every image (as the network sees it), one row per true class, titled with its held-out
    prediction and probability; mistakes in red with a red frame, as "predicted (true)"."""
    y_pred = probs.argmax(axis=1)
    rows = len(class_names)
    cols = max(int(np.sum(y_true == c)) for c in range(rows))
    fig = Figure(figsize=(cols * 1.05 + 1.2, rows * 1.25 + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for row in range(rows):
        for col, index in enumerate(np.flatnonzero(y_true == row)):
            ax = axes[row, col]
            ax.axis("on")
            ax.imshow(images[index], cmap="gray", vmin=0, vmax=255)
            predicted = int(y_pred[index])
            label = f"{class_names[predicted]} {probs[index, predicted]:.2f}"
            if predicted == row:
                ax.set_title(label, fontsize=8)
                continue
            ax.set_title(
                f"{label}\n({class_names[row]})", fontsize=8, color=MISTAKE, fontweight="bold"
            )
            for spine in ax.spines.values():
                spine.set_edgecolor(MISTAKE)
                spine.set_linewidth(2.5)
        axes[row, 0].set_ylabel(class_names[row], fontsize=9)
    wrong = int(np.sum(y_pred != y_true))
    fig.suptitle(
        f"{title}\nheld-out predictions of all {len(y_true)} images: {wrong} mistake(s) "
        "(red: predicted (true))",
        fontsize=10,
    )
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def transfer_note(card: TransferDetails, space: list[dict[str, Any]], command: str) -> str:
    """Markdown for the transfer study's dashboard note, from its (possibly partial) card."""
    base, data, protocol = card.base, card.data, card.protocol
    rows: list[Mapping[str, Any]] = list(space)
    lines = [
        f"## {card.study}",
        "",
        "Written by `tuning transfer` on every run; edits made here are replaced on the next run.",
        "",
        "### Base network",
        "",
        f"- `{base.path}`, sha256 `{base.sha256}` (checked against its card)",
        f"- from study **{base.study}**, trial **#{base.trial}**; frozen, its last "
        "layer replaced by a new softmax over the classes below",
        "",
        "### Data",
        "",
        f"- `{data.root}`: "
        + ", ".join(f"{k} {v}" for k, v in data.counts.items())
        + f" images; sha256 of the files used `{data.sha256[:16]}…`",
        "",
        "### Protocol",
        "",
        protocol.summary,
        "",
        f"- **Trials here:** each is scored by {protocol.inner_folds}-fold stratified "
        "CV on all images; the objective is the held-out log loss (lower is better; with a few "
        "held-out images accuracy moves in big steps and ties). Accuracy is the user attribute "
        "`cv_accuracy`.",
        "",
        f"### Search space ({len(space)} hyperparameters)",
        "",
        space_table(rows),
    ]
    if card.cv is not None and card.tuning is not None:
        lines += ["", *_result_section(card.cv, card.tuning, card.params or {})]
    lines += ["", "### Reproduce", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


def _result_section(cv: NestedCV, tuning: TuningSummary, params: Mapping[str, Any]) -> list[str]:
    optimistic = (
        f"- Its score in this study, {tuning.best_cv_accuracy:.3f}, is optimistic: "
        "it was picked on those same folds."
        if tuning.best_cv_accuracy is not None
        else "- Its score in this study is optimistic: it was picked on those same folds."
    )
    return [
        "### Result",
        "",
        f"- **Nested-CV accuracy: {cv.accuracy:.3f}** ({cv.correct}/{cv.images}), "
        f"95% Wilson interval **{cv.interval.low:.3f} to {cv.interval.high:.3f}**",
        f"- Chosen configuration (best trial #{tuning.best_trial}): {_fmt_params(params)}",
        optimistic,
    ]
