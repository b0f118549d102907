"""The wheels the GPU image lacks: pinned, downloaded for CPython 3.12 on manylinux x86_64,
pruned to the pins, packed here into one .tar.xz (a third smaller than the wheels, since zip
compresses file by file) and unpacked there into wheels with the same files."""

from __future__ import annotations

import importlib.metadata as metadata
import io
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

# What the GPU image lacks. It brings jax, jaxlib (with ml-dtypes, opt-einsum), torch, numpy,
# scipy and scikit-learn; tensorflow, tensorboard, psycopg, playwright and the dev tools are not
# needed under JAX.
PACKAGES = (
    *("keras", "keras-tuner", "kt-legacy", "namex", "optree", "h5py", "absl-py", "rich"),
    *("markdown-it-py", "mdurl", "pygments"),
    *("grpcio", "protobuf"),  # keras-tuner requires them (its distributed-tuning protocol)
    *("optuna", "alembic", "mako", "markupsafe", "sqlalchemy", "greenlet", "colorlog", "pyyaml"),
    "tqdm",
    *("optuna-dashboard", "bottle"),  # `tuning study` writes its dashboard note through it
    *("packaging", "typing-extensions", "requests", "certifi", "charset-normalizer", "idna"),
    "urllib3",
    *("pillow", "matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "pyparsing"),
    *("python-dateutil", "six"),
    "tzdata",  # python-dateutil 4 requires it
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
LOCK_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(;.*)?")


def normalize(name: str) -> str:
    """A distribution's name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins_from_lock(lock: Path, names: Sequence[str]) -> list[str]:
    """`name==version` of each package, as the lock file pins it. A package the lock pins only
    under an environment marker (or twice) is refused: the GPU image needs one version."""
    found: dict[str, list[tuple[str, str | None]]] = {}
    for line in lock.read_text().splitlines():
        if match := LOCK_LINE.fullmatch(line.strip()):
            name, version, marker = match.groups()
            found.setdefault(normalize(name), []).append((version, marker))
    pins, wrong = [], []
    for name in names:
        entries = found.get(normalize(name), [])
        if len(entries) == 1 and entries[0][1] is None:
            pins.append(f"{name}=={entries[0][0]}")
        else:
            lines = [f"{version} {marker}" if marker else version for version, marker in entries]
            wrong.append(f"{name}: {', '.join(lines) or 'none'}")
    if wrong:
        raise ValueError(
            f"{lock} must pin each package of the device check once, without a marker. "
            f"Received: {'; '.join(wrong)}"
        )
    return pins


def pins_from_env(names: Sequence[str]) -> list[str]:
    """`name==version` of each package as this Python has it installed."""
    pins, missing = [], []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise ValueError(
            f"The device check's packages must be installed here to be pinned. "
            f"Received: not installed in {sys.prefix}: {' '.join(missing)}"
        )
    return pins


def download(pins: Sequence[str], folder: Path) -> None:
    """The pinned wheels for CPython 3.12 on manylinux x86_64, into `folder`; `--no-deps`: the
    pins are the whole set, and `run` resolves them offline against the image."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-qq", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", *platforms,
         "-d", str(folder), *pins],
        check=True,
    )  # fmt: skip


def prune(folder: Path, wanted_pins: Sequence[str]) -> None:
    """Remove from `folder` every file but the pinned wheels (an earlier prepare's would only
    make the carry bigger); fail if one is missing."""
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
        names = " ".join(f"{n}=={v}" for n, v in sorted(missing))
        raise ValueError(f"{folder} must hold a wheel of every pin. Received: none of {names}")


def pack(folder: Path, out: Path) -> None:
    """Every wheel's files under `<wheel name>/`, in the wheel's order, in one .tar.xz."""
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


def unpack(archive: Path, folder: Path, manifest: Path) -> int:
    """The wheels again, from `archive` into `folder`, checked against `manifest`; how many."""
    folder.mkdir(parents=True)
    current, z = None, None
    with tarfile.open(archive, mode="r|xz") as tar:
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
        raise ValueError(
            f"{archive} must hold the wheels {manifest} lists. "
            f"Received: {len(made)} wheels, {len(wanted)} listed"
        )
    return len(made)
