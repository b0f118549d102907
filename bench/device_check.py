"""The Python half of `bench/device_check.sh`: the wheels the GPU image lacks (pinned, pruned,
packed here and unpacked there), the quick inputs of a rehearsal, and one summary line per step.

Only the standard library at the top: `unpack` runs on the GPU image's own Python before anything
is installed. `python -m bench.device_check COMMAND ARG ...`; the shell script says when.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import io
import json
import os
import re
import sys
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def pins(names: Sequence[str]) -> None:
    """`name==version` of each package as this Python has it."""
    missing = []
    for name in names:
        try:
            print(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        sys.exit(f"not installed in this venv, so no version to pin: {' '.join(missing)}")


def prune(folder: Path, wanted_pins: Sequence[str]) -> None:
    """Remove from `folder` every file but the pinned wheels; fail if one is missing."""
    norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()  # noqa: E731
    wanted = {(norm(n), v) for n, v in (p.split("==") for p in wanted_pins)}
    found = set()
    for path in sorted(folder.iterdir()):
        key = tuple(path.name.split("-")[:2])
        if path.suffix == ".whl" and (norm(key[0]), key[1]) in wanted:
            found.add((norm(key[0]), key[1]))
        else:
            print(f"  removing {path.name} (not a pinned wheel)")
            path.unlink()
    if missing := wanted - found:
        sys.exit(f"no wheel for: {sorted(missing)}")


def pack(folder: Path, out: Path) -> None:
    """Every wheel's files under `<wheel name>/` in one .tar.xz: a third smaller than the
    wheels themselves (zip compresses file by file)."""
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w:xz", preset=6, format=tarfile.PAX_FORMAT) as tar:
        for wheel in sorted(folder.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                for info in z.infolist():
                    if info.is_dir():
                        continue
                    data = z.read(info)
                    member = tarfile.TarInfo(f"{wheel.name}/{info.filename}")
                    member.size = len(data)
                    member.mode = (info.external_attr >> 16) & 0o777 or 0o644
                    tar.addfile(member, io.BytesIO(data))
    partial.replace(out)


def unpack(folder: Path, manifest: Path, mode: str) -> None:
    """The wheels again, from the archive on standard input (`mode` "r|" when it comes through
    the xz program, "r|xz" when Python decompresses it); checked against `manifest`."""
    folder.mkdir(parents=True)
    current, z = None, None
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz" if mode == "r|xz" else "r|") as tar:
        for member in tar:  # the files of one wheel after another
            wheel, name = member.name.split("/", 1)
            if wheel != current:
                if z:
                    z.close()
                current, z = wheel, zipfile.ZipFile(folder / wheel, "w", zipfile.ZIP_STORED)
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | member.mode) << 16
            extracted = tar.extractfile(member)
            assert z is not None and extracted is not None
            z.writestr(info, extracted.read())
    if z:
        z.close()
    made, wanted = sorted(p.name for p in folder.glob("*.whl")), manifest.read_text().split()
    if made != sorted(wanted):
        sys.exit(f"unpacked {len(made)} wheels, the manifest lists {len(wanted)}")
    print(f"{len(made)} wheels")


def quick_inputs(mnist: Path, folder: Path) -> None:
    """A rehearsal's data: 1,500 training and 500 test images of `mnist`, and the two study
    files with every subset shrunk to fit."""
    import numpy as np

    with np.load(mnist) as a:
        np.savez_compressed(
            folder / "mnist.npz",
            x_train=a["x_train"][:1500], y_train=a["y_train"][:1500],
            x_test=a["x_test"][:500], y_test=a["y_test"][:500],
        )  # fmt: skip
    shrink = {"smoke": {2000: 400}, "mnist_cnn": {6000: 300, 9000: 450, 60000: 1000}}
    for name, subsets in shrink.items():
        text = Path(f"studies/{name}.toml").read_text()
        for big, small in subsets.items():
            text = re.sub(rf"^subset = {big}\b", f"subset = {small}", text, flags=re.M)
        if name == "smoke":
            text = re.sub(r"^trials = 3\b", "trials = 2", text, flags=re.M)
        if any(re.search(rf"^subset = {big}\b", text, flags=re.M) for big in subsets):
            sys.exit(f"studies/{name}.toml: a subset was not shrunk")
        (folder / f"{name}.toml").write_text(text)


def _metric(key: str, value: str) -> None:
    print(f"{key}: {value}")
    with open(Path(os.environ["OUT"]) / "metrics.tsv", "a") as f:
        f.write(f"{key}\t{value}\n")


def _load(path: str) -> Any:
    return json.loads(Path(path).read_text())


def report_env() -> None:
    """What the steps will run on: versions, the device, and no TensorFlow."""
    import importlib.util

    import tuning.cli  # noqa: F401  the project, as the steps run it
    from tuning import backend
    from tuning.device import detect

    for name in ("keras", "keras-tuner", "optuna", "numpy", "scipy", "scikit-learn", "ml-dtypes"):
        print(f"{name} {metadata.version(name)}")
    print("Keras backend:", backend.name(), backend.versions())
    print("tensorflow importable:", importlib.util.find_spec("tensorflow") is not None)
    _metric("device", detect().describe())
    if backend.name() != "jax" or "tensorflow" in sys.modules:
        sys.exit("expected the JAX backend and no TensorFlow")


def report_backends(path: str) -> None:
    for name, s in _load(path)["summary"].items():
        peak = "-" if s["peak_gpu_mib"] is None else f"{s['peak_gpu_mib']:.0f} MiB"
        _metric(f"img_s {name}", f"{s['img_s']['median']:.0f} img/s, peak GPU {peak}")


def report_study(name: str) -> None:
    """The smoke study's trial states, or the default study's seed trial and its time."""
    import collections

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=os.environ["TUNING_STORAGE"])
    if name == "smoke":
        states = collections.Counter(t.state.name.lower() for t in study.trials)
        _metric("smoke study", f"{dict(states)}, best {study.best_value:.4f}")
        return
    trial = study.trials[0]
    assert trial.datetime_complete is not None and trial.datetime_start is not None
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    value = "-" if trial.value is None else f"{trial.value:.4f}"
    _metric("seed trial", f"{seconds:.1f} s, {trial.state.name}, CV accuracy {value}")


def report_export(path: str) -> None:
    from tuning.model.card import ExportCard, ModelCard

    card = ModelCard.read(Path(path).parent / "model.keras")
    assert isinstance(card, ExportCard) and card.test and card.training
    test = card.test
    _metric(
        "export",
        f"test accuracy {test.accuracy} ({test.errors} errors in {test.images}), trained "
        f"{card.training.seconds} s, formats {', '.join(card.formats)}",
    )


def report_workers(path: str) -> None:
    rows = _load(path)["layouts"]
    _metric("workers", "; ".join(
        f"{r['workers']} x {r['threads_per_worker']}: {r['trials_per_hour']}/h "
        f"({r['complete_trials']} done, {r['failed_trials']} failed)" for r in rows
    ))  # fmt: skip


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "pins": lambda a: pins(a),
    "prune": lambda a: prune(Path(a[0]), a[1:]),
    "pack": lambda a: pack(Path(a[0]), Path(a[1])),
    "unpack": lambda a: unpack(Path(a[0]), Path(a[1]), a[2]),
    "quick-inputs": lambda a: quick_inputs(Path(a[0]), Path(a[1])),
    "report-env": lambda a: report_env(),
    "report-backends": lambda a: report_backends(a[0]),
    "report-study": lambda a: report_study(a[0]),
    "report-export": lambda a: report_export(a[0]),
    "report-workers": lambda a: report_workers(a[0]),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.device_check", description=__doc__)
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("args", nargs="*")
    args = parser.parse_args(argv)
    COMMANDS[args.command](args.args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
