"""A disk that fills during an export: one line naming the path that could not be written and
the space it needed and had, the previous export byte for byte as it was, nothing half-written
left in the way of the next export. Real files on a size-limited file system (tmpfs), which
only root can mount: elsewhere the tests are skipped, saying so."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest

from tests.helpers import SMOKE, tmpfs, untrained_seed_study
from tuning.artifacts import artifact_store
from tuning.cli import main
from tuning.errors import WriteError
from tuning.model.card import ExportCard, ModelCard
from tuning.publish import Publication, format_bytes

pytestmark = pytest.mark.faults

DISK = 32 * 2**20  # room for one export of the smoke study's seed network and its member


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of `DISK` bytes mounted on a folder of the test's, unmounted after it."""
    folder = tmp_path / "disk"
    folder.mkdir()
    with tmpfs(folder, f"size={DISK}"):
        yield folder


def free(disk: Path) -> int:
    return shutil.disk_usage(disk).free


def fill(disk: Path, *, leave: int) -> Path:
    """A ballast file that leaves `leave` bytes free on `disk`."""
    ballast = disk / "ballast"
    ballast.write_bytes(b"\0" * (free(disk) - leave))
    return ballast


def hashes(folder: Path) -> dict[str, str]:
    """The sha256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path) -> Path:
    """600 training and 200 test images of the session's MNIST slice: an export in seconds."""
    path = tmp_path_factory.mktemp("disk-full-data") / "mnist.npz"
    with np.load(mnist_npz) as full:
        np.savez(path, **{k: full[k][: 600 if "train" in k else 200] for k in full.files})
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, data: Path) -> str:
    """The smoke study on `data`, its seed network (trial 0) finished its rung untrained."""
    return untrained_seed_study(tmp_path_factory.mktemp("disk-full"), data)


def export(storage: str, data: Path, out: Path, *, seeds: int = 1) -> int:
    """`tuning export` of the study's trial 0 to `out`; returns its exit status."""
    argv = ["export", str(SMOKE), "--storage", storage, "--data", str(data), "--out", str(out)]
    return main([*argv, "--trial", "0", "--seeds", str(seeds), "--no-baseline"])


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line on stderr, below the export's progress lines; no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_a_full_disk_names_the_path_and_leaves_the_previous_export_as_it_was(
    study: str, data: Path, disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = disk / "models" / "smoke"
    assert export(study, data, out) == 0
    before = hashes(out)
    size = sum((out / name).stat().st_size for name in before)
    capsys.readouterr()
    ballast = fill(disk, leave=64 * 1024)

    # Publishing it again: the copy of the kept member into the staging folder finds no room.
    assert export(study, data, out) == 1
    needed = f"about {size / 1e6:.1f} MB needed"
    assert error_line(capsys) == (
        f"error: cannot write {out / 'model.keras'}: no space left on device ({needed}, "
        f"{format_bytes(free(disk))} free on {disk}); free some space and run it again; the "
        f"previous export in {out} is unchanged"
    )
    assert hashes(out) == before
    assert sorted(os.listdir(out.parent)) == [".smoke.members", "smoke"]  # no staging left

    # A second seed: its network cannot be saved beside the export.
    assert export(study, data, out, seeds=2) == 1
    line = error_line(capsys)
    assert line.startswith(f"error: cannot write {out.parent / '.smoke.members'}")
    assert "no space left on device" in line and line.endswith(f"{out} is unchanged")
    assert hashes(out) == before

    # Room again: whatever the failures left does not stand in the next export's way.
    ballast.unlink()
    assert export(study, data, out, seeds=2) == 0
    card = ModelCard.read(out / "model.keras")
    assert isinstance(card, ExportCard) and card.ensemble is not None
    assert [member.seed for member in card.ensemble.scores] == [42, 43]


def test_a_full_artifact_folder_is_named_and_nothing_is_published(
    tmp_path: Path, disk: Path
) -> None:
    out = tmp_path / "models" / "smoke"
    out.mkdir(parents=True)
    (out / "model.keras").write_bytes(b"the previous export")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'studies.db'}")
    study.tell(study.ask(), 0.9)
    store = artifact_store(disk / "artifacts")
    fill(disk, leave=0)
    with pytest.raises(WriteError) as raised, Publication(out, store=store) as publication:
        model = publication.staging / "model.keras"
        model.write_bytes(b"\1" * 300_000)
        publication.upload(study, study.trials[0], [model])
    assert str(raised.value) == (
        f"cannot write {disk / 'artifacts'}: no space left on device (300 KB needed, "
        f"{format_bytes(free(disk))} free on {disk}); free some space and run it again; the "
        f"previous export in {out} is unchanged"
    )
    assert sorted(os.listdir(out.parent)) == ["smoke"]  # no staging left
    assert (out / "model.keras").read_bytes() == b"the previous export"
