"""The PNG plots of export and transfer: learning curves, fold accuracies, confusion matrix, and
a grid of test images with their predictions.

Drawn on bare `matplotlib.figure.Figure`s (no pyplot), so no display or global state is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics

DPI = 110
MISTAKE = "tab:red"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def learning_curves(
    fold_histories: list[dict[str, list[float]]],
    retrain_history: dict[str, list[float]],
    path: Path,
    *,
    title: str,
) -> Path:
    """Loss and accuracy per epoch: each CV fold's training (dashed) and validation (solid)
    curves, and the final retraining on all images (training only: no data is held out), if
    `retrain_history` has any."""
    fig = Figure(figsize=(11, 4.2))
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for fold, history in enumerate(fold_histories):
            colour = f"C{fold % 10}"
            for key, style, kind in ((metric, "--", "train"), (f"val_{metric}", "-", "val")):
                values = history.get(key, [])
                if values:
                    epochs = np.arange(1, len(values) + 1)
                    ax.plot(
                        epochs,
                        values,
                        style,
                        color=colour,
                        marker=".",
                        label=f"fold {fold + 1} {kind}",
                    )
        values = retrain_history.get(metric, [])
        if values:
            ax.plot(
                np.arange(1, len(values) + 1),
                values,
                "-",
                color="black",
                linewidth=2,
                marker="o",
                markersize=3,
                label="retrain on all images (train)",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: CV folds" + (" and final retraining" if values else ""))
        ax.grid(alpha=0.3)
        if metric == "loss":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def fold_accuracies(
    groups: dict[str, list[float]], path: Path, *, test_accuracy: float | None, title: str
) -> Path:
    """A box plot of the CV fold accuracies of each group (say the best trial and the seed
    network), every fold drawn as a point, and the test accuracy as a line."""
    fig = Figure(figsize=(max(4.5, 2.2 * len(groups) + 2), 4.2))
    ax = fig.subplots()
    labels = list(groups)
    ax.boxplot([groups[k] for k in labels], tick_labels=labels, widths=0.5)
    rng = np.random.default_rng(0)
    for i, label in enumerate(labels, start=1):
        values = groups[label]
        ax.scatter(i + rng.uniform(-0.08, 0.08, len(values)), values, color=f"C{i - 1}", zorder=3)
    if test_accuracy is not None:
        ax.axhline(
            test_accuracy,
            color="black",
            linestyle=":",
            label=f"exported model, test set: {test_accuracy:.4f}",
        )
        ax.legend(fontsize=8)
    ax.set_ylabel("validation accuracy per fold")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], path: Path, *, title: str
) -> Path:
    """Counts of (true, predicted) pairs; off-diagonal cells are the mistakes."""
    n = len(class_names)
    counts = metrics.confusion_matrix(y_true, y_pred, labels=range(n))
    fig = Figure(figsize=(0.55 * n + 2.5, 0.55 * n + 2))
    ax = fig.subplots()
    # Log colours: the diagonal holds ~1000 per cell, the mistakes a handful.
    ax.imshow(np.log1p(counts), cmap="Blues")
    for (row, col), count in np.ndenumerate(counts):
        if count:
            colour = "white" if row == col else MISTAKE
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n), class_names)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def prediction_grid(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str],
    path: Path,
    *,
    title: str,
    rows: int = 6,
    cols: int = 10,
    seed: int = 0,
) -> Path:
    """Test images with their predictions: up to half the grid is mistakes (red frame,
    "predicted (true)"), the rest a random sample of correct ones, all in random order."""
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero(y_true != y_pred)
    right = np.flatnonzero(y_true == y_pred)
    cells = rows * cols
    shown_wrong = rng.permutation(wrong)[: cells // 2]
    shown_right = rng.permutation(right)[: cells - len(shown_wrong)]
    chosen = rng.permutation(np.concatenate([shown_wrong, shown_right]).astype(int))
    fig = Figure(figsize=(cols * 1.0, rows * 1.15))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for ax, index in zip(axes, chosen, strict=False):
        ax.axis("on")
        ax.imshow(images[index].squeeze(), cmap="gray", vmin=0, vmax=255)
        predicted, true = class_names[y_pred[index]], class_names[y_true[index]]
        if predicted == true:
            ax.set_title(predicted, fontsize=9)
            continue
        ax.set_title(f"{predicted} ({true})", fontsize=9, color=MISTAKE, fontweight="bold")
        for spine in ax.spines.values():
            spine.set_edgecolor(MISTAKE)
            spine.set_linewidth(2.5)
    fig.suptitle(
        f"{title}\n{len(shown_wrong)} of the {len(wrong)} mistakes (red: predicted (true)) and "
        f"{len(shown_right)} correct ones out of {len(y_true)}",
        fontsize=10,
    )
    return _save(fig, path)


def front_figure(
    points: list[tuple[float, float, str]],
    front: list[tuple[float, float, str]],
    path: Path,
    *,
    cost_label: str,
    marked: tuple[float, float, str] | None,
    title: str,
) -> Path:
    """Accuracy against cost: every scored trial `(cost, accuracy, label)` as a grey dot, the
    non-dominated ones joined as a step line and labelled, and `marked` (the seed network) as a
    star. Cost is on a log axis, as networks span orders of magnitude."""
    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.subplots()
    if points:
        ax.scatter(
            [p[0] for p in points], [p[1] for p in points], color="0.7", s=18, label="trials"
        )
    ordered = sorted(front)
    if ordered:
        ax.step(
            [p[0] for p in ordered],
            [p[1] for p in ordered],
            where="post",
            color="C0",
            marker="o",
            label=f"Pareto front ({len(ordered)} trials)",
        )
        for cost, accuracy, label in ordered:
            ax.annotate(label, (cost, accuracy), textcoords="offset points", xytext=(4, -10),
                        fontsize=7)  # fmt: skip
    if marked is not None:
        ax.scatter([marked[0]], [marked[1]], marker="*", s=220, color="C3", zorder=4,
                   label=marked[2])  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(cost_label)
    ax.set_ylabel("CV accuracy at the top rung")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    return _save(fig, path)
