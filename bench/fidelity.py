"""Does each fidelity rung predict the next? Read from a study that has already run; no training.

`python -m bench fidelity [--study FILE] [--storage URL]` opens the study of a study file (default
studies/mnist_cnn.toml) in its storage (default: `$TUNING_STORAGE`, else
sqlite:///storage/studies.db), read-only, and reports:

- for each rung, how many trials finished it (completed and pruned trials; a rung's score is the
  intermediate value at step 3**rung, `tuning.study.rungs`);
- for each pair of consecutive rungs, Spearman's rank correlation between the scores of the
  trials that finished both (`tuning.study.rungs.rung_correlations`); only promoted trials reach the
  upper rung, so it describes the top of the lower rung's ranking, the part the pruner uses;
- the best trial at the highest rung any trial reached (what `tuning export` would retrain).

A low correlation between two rungs says the cheaper one ranks trials differently from the
dearer one, so pruning there throws away trials on noise. `--quick` changes nothing here: the
study is read, not run. A missing study file, database or study, or a study stored without
rungs (by an earlier protocol), is one error line and exit status 2.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc

from bench.common import save
from bench.harness import DEFAULT_STUDY
from tuning.errors import TuningError
from tuning.protocol import PROTOCOL_VERSION, Rung
from tuning.storage import redact, resolve_storage_url
from tuning.study.config import load_spec
from tuning.study.rungs import SCORED_STATES, best_at_highest_rung, rung_correlations, rung_scores


class StudyNotFound(TuningError):
    """The study file, its database or the study itself does not exist."""


class NoRungs(TuningError):
    """The study was stored without fidelity rungs (by an earlier protocol)."""


def _open(study_file: Path, storage: str | None) -> tuple[optuna.Study, str]:
    """The stored study of `study_file`, opened without writing anything."""
    spec = load_spec(study_file)  # ConfigError (a TuningError) names the file
    url = resolve_storage_url(storage)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        database = Path(url.removeprefix("sqlite:///"))
        if not database.is_file():  # optuna would create an empty database here
            raise StudyNotFound(
                f"no study database at {database}; run `tuning study {study_file}` first or "
                "pass --storage"
            )
    try:
        rdb = optuna.storages.RDBStorage(url)
        names = [s.study_name for s in rdb.get_all_studies()]
    except (sqlalchemy.exc.SQLAlchemyError, ModuleNotFoundError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StudyNotFound(f"cannot read storage {redact(url)}: {reason}") from None
    if spec.name not in names:
        raise StudyNotFound(
            f"study '{spec.name}' (from {study_file}) not found in {redact(url)}; stored "
            f"studies: {', '.join(names) or 'none'}"
        )
    return optuna.load_study(study_name=spec.name, storage=rdb), url


def _ladder(study: optuna.Study) -> list[dict[str, Any]]:
    """The rungs of the study's stored protocol.

    Raises:
        NoRungs: the study was not stored with rungs (an earlier protocol reported per epoch
            and per fold, so its intermediate values are no rung scores).
    """
    protocol = study.user_attrs.get("protocol") or {}
    rungs = protocol.get("rungs")
    if not rungs or protocol.get("protocol_version") != PROTOCOL_VERSION:
        version = protocol.get("protocol_version", 1) if protocol else "none"
        raise NoRungs(
            f"study '{study.study_name}' has no fidelity rungs (protocol {version}, not "
            f"{PROTOCOL_VERSION}): its intermediate values are not rung scores, so there is "
            "nothing to correlate; run a study with this version of tuning first"
        )
    return [dict(rung) for rung in rungs]


def _describe(rung: dict[str, Any]) -> str:
    try:
        return Rung(**rung).describe()
    except TypeError:  # keys this version does not know
        return "?"


def analyse(study: optuna.Study) -> dict[str, Any]:
    """Trials per rung, consecutive-rung Spearman correlations and the best trial at the top."""
    trials = study.get_trials(deepcopy=False)
    ladder = _ladder(study)
    scored = [rung_scores(t) for t in trials if t.state in SCORED_STATES]
    rungs = [
        {"rung": i, "describe": _describe(rung), **rung, "trials": sum(i in s for s in scored)}
        for i, rung in enumerate(ladder)
    ]
    correlations = [
        {**dataclasses.asdict(c), "describe": c.describe()}
        for c in rung_correlations(trials, rungs=len(ladder))
    ]
    best = best_at_highest_rung(trials)
    best_out = None
    if best is not None:
        scores = rung_scores(best)
        top = max(scores)
        best_out = {
            "number": best.number,
            "state": best.state.name,
            "rung": top,
            "score": round(scores[top], 4),
            "params": best.params,
        }
    return {
        "study": study.study_name,
        "trials": len(trials),
        "trials_scored": len(scored),
        "rungs": rungs,
        "correlations": correlations,
        "best_at_highest_rung": best_out,
    }


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"Study '{result['study']}' in {result['storage']} (from {result['study_file']}): "
        f"{result['trials']} trials, {result['trials_scored']} completed or pruned.",
        "",
        "| rung | scored by | trials that finished it |",
        "|---|---|---:|",
        *(f"| {r['rung']} | {r['describe']} | {r['trials']} |" for r in result["rungs"]),
        "",
        "| rungs | trials on both | Spearman rho | p-value |",
        "|---|---:|---:|---:|",
    ]
    for c in result["correlations"]:
        rho = "-" if c["rho"] is None else f"{c['rho']:+.3f}"
        p = "-" if c["p_value"] is None else f"{c['p_value']:.2g}"
        lines.append(f"| {c['lower']} -> {c['upper']} | {c['trials']} | {rho} | {p} |")
    if not result["correlations"]:
        lines.append("| (one rung: nothing to correlate) | | | |")
    best = result["best_at_highest_rung"]
    lines += [
        "",
        "Best trial at the highest rung: "
        + (
            "none (no trial has finished a rung)"
            if best is None
            else f"#{best['number']} ({best['state']}), rung {best['rung']}, "
            f"score {best['score']:.4f}"
        )
        + ".",
    ]
    return "\n".join(lines)


def run(
    *, quick: bool, study: str | Path = DEFAULT_STUDY, storage: str | None = None
) -> dict[str, Any]:
    """Analyse the stored study of `study` (a study file); `quick` changes nothing.

    Raises:
        StudyNotFound: no such database or study. NoRungs: a study stored without rungs.
        ConfigError: a bad study file.
    """
    del quick  # reading a study costs the same either way
    loaded, url = _open(Path(study), storage)
    result = {"study_file": str(study), "storage": redact(url), **analyse(loaded)}
    save("fidelity", result, _table(result))
    return result
