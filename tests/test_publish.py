"""`Publication`: an output folder is replaced whole or not at all, and no staging is left."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest

from tuning.artifacts import artifact_store
from tuning.errors import ExportError
from tuning.publish import Publication


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    """An export published earlier: a model, a card and a subfolder."""
    out = tmp_path / "models" / "smoke"
    (out / "saved_model").mkdir(parents=True)
    (out / "model.keras").write_bytes(b"old weights \x00\x01")
    (out / "model_card.json").write_text('{"trial": 1}')
    (out / "saved_model" / "saved_model.pb").write_bytes(b"old graph")
    return out


def publish_new(out: Path, store_dir: Path) -> Publication:
    """A publication of a new export into `out`, its files written, not yet committed."""
    publication = Publication(out, store=artifact_store(store_dir))
    (publication.staging / "model.keras").write_bytes(b"new weights")
    (publication.staging / "model_card.json").write_text('{"trial": 2}')
    return publication


@pytest.mark.parametrize("interruption", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_publication_leaves_the_previous_folder_byte_for_byte_and_no_staging(
    previous: Path, tmp_path: Path, interruption: BaseException
) -> None:
    before = snapshot(previous)
    with pytest.raises(type(interruption)), publish_new(previous, tmp_path / "artifacts"):
        raise interruption
    assert snapshot(previous) == before
    assert sorted(p.name for p in previous.parent.iterdir()) == ["smoke"]


def test_a_committed_publication_replaces_the_previous_folder_whole(
    previous: Path, tmp_path: Path
) -> None:
    with publish_new(previous, tmp_path / "artifacts") as publication:
        publication.commit()
    assert snapshot(previous) == {"model.keras": b"new weights", "model_card.json": b'{"trial": 2}'}
    assert sorted(p.name for p in previous.parent.iterdir()) == ["smoke"]  # no .old, no staging
    assert oct(previous.stat().st_mode & 0o777) == oct(0o755)  # readable by other users


def test_a_first_publication_creates_the_folder_and_its_parents(tmp_path: Path) -> None:
    out = tmp_path / "new" / "models" / "smoke"
    with publish_new(out, tmp_path / "artifacts") as publication:
        assert not out.exists()  # nothing is visible before the commit
        publication.commit()
    assert snapshot(out) == {"model.keras": b"new weights", "model_card.json": b'{"trial": 2}'}


def test_a_commit_that_cannot_move_the_new_folder_in_restores_the_previous_one(
    previous: Path, tmp_path: Path
) -> None:
    before = snapshot(previous)
    with (
        pytest.raises(FileNotFoundError),
        publish_new(previous, tmp_path / "artifacts") as publication,
    ):
        shutil.rmtree(publication.staging)  # say, a cleaner emptied the folder meanwhile
        publication.commit()
    assert snapshot(previous) == before
    assert sorted(p.name for p in previous.parent.iterdir()) == ["smoke"]


def test_uploaded_files_become_artifacts_of_the_trial_and_survive_a_rollback(
    previous: Path, tmp_path: Path
) -> None:
    """The artifacts are the record of what was tried; only the folder is rolled back."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'studies.db'}")
    study.tell(study.ask(), 0.9)
    trial = study.trials[0]
    store_dir = tmp_path / "artifacts"
    with pytest.raises(RuntimeError), publish_new(previous, store_dir) as publication:
        model = publication.staging / "model.keras"
        ids = publication.upload(study, trial, [model])
        raise RuntimeError("the test set is missing")
    assert list(ids) == ["model.keras"] and publication.artifacts == ids
    assert (store_dir / ids["model.keras"]).read_bytes() == b"new weights"
    assert snapshot(previous)["model.keras"] == b"old weights \x00\x01"


def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    with pytest.raises(ExportError, match=r"^out: .*a-file: exists and is not a folder$"):
        Publication.check_writable(blocker)
    with pytest.raises(ExportError, match=r"^out: .*a-file/models: cannot write to .*a-file"):
        Publication.check_writable(blocker / "models")
    Publication.check_writable(tmp_path / "models")  # writable: checked, and nothing left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert blocker.read_text() == "mine"
