"""What an exported model predicted on its test split, kept beside it as `test_predictions.npz`
so that any two exports of the same test images can be compared later (`tuning compare`)
without retraining or predicting again."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuning.errors import ModelError

PREDICTIONS_FILE = "test_predictions.npz"


def test_data_sha256(x: np.ndarray, y: np.ndarray) -> str:
    """The sha256 of a test split's images and labels: shapes, dtypes and bytes, so that the
    same images read from two copies of a file (or two formats) hash alike."""
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(x), np.ascontiguousarray(y, dtype=np.int64)):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


test_data_sha256.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


@dataclass(frozen=True, eq=False)
class TestPredictions:
    """Class probabilities of the shipped model (`probabilities`, shape (n, k)) and, for an
    ensemble, of each member (`members`, shape (m, n, k)), on test images with integer
    `labels` whose images and labels hash to `data_sha256`."""

    __test__ = False  # not a pytest test class, whatever its name

    labels: np.ndarray
    probabilities: np.ndarray
    data_sha256: str
    members: np.ndarray | None = None

    @property
    def predicted(self) -> np.ndarray:
        return np.asarray(self.probabilities.argmax(axis=1))

    @property
    def wrong(self) -> np.ndarray:
        """A boolean per test image: the model got it wrong."""
        return np.asarray(self.predicted != self.labels)

    @property
    def errors(self) -> int:
        return int(self.wrong.sum())

    @property
    def member_count(self) -> int:
        return 0 if self.members is None else len(self.members)

    def same_images(self, other: TestPredictions) -> bool:
        """Whether `other` was predicted on the same test images and labels."""
        return self.data_sha256 == other.data_sha256 and len(self.labels) == len(other.labels)

    def describe_images(self) -> str:
        return f"{len(self.labels)} images, sha256 {self.data_sha256[:12]}…"

    def member(self, index: int) -> TestPredictions:
        """The predictions of member `index` alone (a single model is its own member 0)."""
        if self.members is None:
            if index != 0:
                raise IndexError(f"a single model has only member 0. Received: {index}")
            return self
        return TestPredictions(self.labels, self.members[index], self.data_sha256)

    def save(self, folder: Path) -> Path:
        """Write `folder/test_predictions.npz` (compressed, float32); returns its path."""
        path = folder / PREDICTIONS_FILE
        arrays: dict[str, np.ndarray] = {
            "labels": self.labels.astype(np.int16),
            "probabilities": self.probabilities.astype(np.float32),
            "data_sha256": np.array(self.data_sha256),
        }
        if self.members is not None:
            arrays["members"] = self.members.astype(np.float32)
        np.savez_compressed(path, allow_pickle=False, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TestPredictions:
        """Read a `test_predictions.npz` (a file, or the folder or model file beside it).

        Raises:
            ModelError: there is none, or it is not a predictions file of matching shapes.
        """
        path = Path(path)
        if path.is_dir() or not path.suffix:  # an export folder (or a missing one)
            path = path / PREDICTIONS_FILE
        elif path.suffix != ".npz":  # the model file inside it
            path = path.with_name(PREDICTIONS_FILE)
        if not path.is_file():
            raise ModelError(
                f"{path}: no test predictions; expected the {PREDICTIONS_FILE} that `tuning "
                "export` writes beside model.keras (exports made before it was added have none: "
                "export again)"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                labels = np.asarray(data["labels"], dtype=np.int64)
                probabilities = np.asarray(data["probabilities"], dtype=np.float64)
                sha = str(data["data_sha256"])
                members = data.get("members")
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{path}: not a test predictions file ({exc})") from None
        n = len(labels)
        if (
            probabilities.ndim != 2
            or len(probabilities) != n
            or (
                members is not None
                and (members.ndim != 3 or members.shape[1:] != probabilities.shape)
            )
        ):
            raise ModelError(
                f"{path}: expected probabilities of shape ({n}, classes) for {n} labels. "
                f"Received: {probabilities.shape}"
            )
        return cls(labels, probabilities, sha, None if members is None else np.asarray(members))
