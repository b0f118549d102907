"""How many members pay? Read from exports that have already run; no training.

`python -m bench ensembles [--models DIR ...]` reads the `test_predictions.npz` of each export
folder (default: the default study's export and its baseline's, `storage/models/mnist_cnn` and
`storage/models/mnist_cnn-trial0`) and reports, for each number of members k, the test errors of
the mean of k members: over every subset of k of the export's members (mean, min, max: what k
seeds give whichever seeds they are) and of the first k (what `tuning export --seeds k` ships).
It also sets each export's members against the first's, seeds against seeds (Welch), so the
curve and "did tuning help?" come from one read. `--quick` changes nothing here. An export
without predictions is one error line and exit status 2.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import save
from tuning.model.compare import mean_difference
from tuning.model.predictions import TestPredictions

DEFAULT_MODELS = ("storage/models/mnist_cnn", "storage/models/mnist_cnn-trial0")


def member_curve(predictions: TestPredictions) -> list[dict[str, Any]]:
    """For k = 1..m: the errors of the mean of every k-subset of the members, and of the first k."""
    members = predictions.members
    if members is None:
        members = predictions.probabilities[None]
    rows = []
    for k in range(1, len(members) + 1):
        errors = [
            int(np.sum(members[list(subset)].mean(axis=0).argmax(axis=1) != predictions.labels))
            for subset in itertools.combinations(range(len(members)), k)
        ]
        first = int(np.sum(members[:k].mean(axis=0).argmax(axis=1) != predictions.labels))
        rows.append(
            {"k": k, "subsets": len(errors), "mean": float(np.mean(errors)), "min": min(errors),
             "max": max(errors), "first_k": first}
        )  # fmt: skip
    return rows


def run(quick: bool = False, models: Sequence[str] | None = None) -> dict[str, Any]:
    """The member curve of each export in `models`, and their members set against the first's.

    Raises:
        ModelError: an export has no readable test predictions.
    """
    del quick  # nothing is trained, so there is nothing to shrink
    folders = [Path(m) for m in (models or DEFAULT_MODELS)]
    loaded = [TestPredictions.load(folder) for folder in folders]
    exports = []
    lines = ["| export | k | subsets | errors: mean (min-max) | first k |", "|---|---|---|---|---|"]
    for folder, predictions in zip(folders, loaded, strict=True):
        curve = member_curve(predictions)
        exports.append({"folder": str(folder), "members": predictions.member_count, "curve": curve})
        lines += [
            f"| {folder.name} | {r['k']} | {r['subsets']} | {r['mean']:.1f} ({r['min']}-{r['max']})"
            f" | {r['first_k']} |"
            for r in curve
        ]
    seeds = []
    first = loaded[0]
    for folder, other in zip(folders[1:], loaded[1:], strict=True):
        ours = [first.member(i).errors for i in range(max(1, first.member_count))]
        theirs = [other.member(i).errors for i in range(max(1, other.member_count))]
        compared = mean_difference(ours, theirs)
        seeds.append({"reference": str(folder), "sentence": compared.sentence()})
        lines += ["", f"{folders[0].name} against {folder.name}: {compared.sentence()}"]
    table = "\n".join(lines)
    print(table, flush=True)
    result = {"exports": exports, "seeds_compared": seeds}
    save("ensembles", result, table)
    return result
