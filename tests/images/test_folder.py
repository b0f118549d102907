"""Image-folder datasets: every image mode works, bad files are skipped and named, bad folders
are refused with a message that says what to fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.letters import write_letters
from tuning.errors import DataError
from tuning.images.folder import (
    ENV_GREEK,
    load_image_folder,
    parse_classes,
    resolve_data_dir,
    skipped_warning,
)

MODES = ("L", "RGB", "RGBA", "I;16")


def test_grayscale_rgb_rgba_and_16_bit_photos_all_become_mnist_like_digits(tmp_path: Path) -> None:
    root = write_letters(tmp_path / "letters", ["alpha", "beta"], 4, modes=MODES)
    modes = {Image.open(p).mode for p in (root / "alpha").iterdir()}
    assert {"L", "RGB", "RGBA"} <= modes and modes & {"I;16", "I"}

    data = load_image_folder(root)

    assert data.class_names == ["alpha", "beta"]
    assert data.counts() == {"alpha": 4, "beta": 4}
    assert data.skipped == []
    assert data.x.shape == (8, 28, 28) and data.x.dtype == np.uint8
    # MNIST's look: light ink on black, the border empty, the ink fitted into the 20x20 centre.
    for image in data.x:
        assert image.max() == 255
        assert image[:3].max() == image[-3:].max() == 0
        assert image[:, :3].max() == image[:, -3:].max() == 0
    assert list(data.y) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_unusable_files_are_skipped_and_listed_with_the_reason(tmp_path: Path) -> None:
    root = write_letters(tmp_path / "letters", ["alpha", "beta"], 3)
    (root / "alpha" / "notes.txt").write_text("not a picture")
    good = (root / "beta" / "beta_000.png").read_bytes()
    (root / "beta" / "broken.png").write_bytes(good[: len(good) // 3])
    Image.new("L", (12, 40), 200).save(root / "beta" / "tiny.png")
    Image.new("L", (64, 64), 200).save(root / "alpha" / "blank.png")
    (root / "alpha" / ".DS_Store").write_bytes(b"\0\1")

    data = load_image_folder(root)

    assert data.counts() == {"alpha": 3, "beta": 3}
    reasons = {s.path.name: s.reason for s in data.skipped}
    assert set(reasons) == {"notes.txt", "broken.png", "tiny.png", "blank.png"}
    assert "not an image" in reasons["notes.txt"]
    assert "cannot read" in reasons["broken.png"]
    assert "too small: 12x40 px" in reasons["tiny.png"]
    assert "no ink" in reasons["blank.png"]
    warning = skipped_warning(data.skipped)
    assert warning is not None and warning.startswith("skipped 4 file(s): ")
    assert str(root / "beta" / "tiny.png") in warning
    assert skipped_warning([]) is None


def test_a_class_folder_without_a_usable_image_is_an_error_naming_it(tmp_path: Path) -> None:
    root = write_letters(tmp_path / "letters", ["alpha", "beta"], 3)
    (root / "gamma").mkdir()
    with pytest.raises(DataError, match=r"gamma: no usable image for class 'gamma'.*0 file"):
        load_image_folder(root)
    (root / "gamma" / "readme.txt").write_text("letters go here")
    with pytest.raises(DataError, match=r"1 file\(s\); skipped: .*readme.txt \(not an image"):
        load_image_folder(root)


def test_fewer_than_two_classes_and_unknown_class_names_are_refused(tmp_path: Path) -> None:
    root = write_letters(tmp_path / "letters", ["alpha", "beta"], 2)
    with pytest.raises(DataError, match="at least 2 classes.*Received: alpha"):
        load_image_folder(root, ["alpha"])
    with pytest.raises(DataError, match="no folder for omega in .*available classes: alpha, beta"):
        load_image_folder(root, ["alpha", "omega"])
    lonely = write_letters(tmp_path / "one", ["alpha"], 2)
    with pytest.raises(DataError, match="at least 2 classes"):
        load_image_folder(lonely)


def test_classes_keep_the_given_order_and_the_data_hash_follows_the_files(tmp_path: Path) -> None:
    root = write_letters(tmp_path / "letters", ["alpha", "beta", "gamma"], 2)
    data = load_image_folder(root, parse_classes("gamma, alpha"))
    assert data.class_names == ["gamma", "alpha"] and list(data.y) == [0, 0, 1, 1]
    assert data.sha256 == load_image_folder(root, ["gamma", "alpha"]).sha256
    Image.new("L", (64, 64), 220).save(root / "alpha" / "alpha_000.png")  # replaced by a blank
    assert load_image_folder(root, ["gamma", "alpha"]).sha256 != data.sha256


def test_class_lists_and_the_data_folder_are_parsed_strictly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_classes(None) is None and parse_classes(" ") is None
    assert parse_classes("alpha,beta,") == ["alpha", "beta"]
    with pytest.raises(DataError, match="twice. Received: alpha"):
        parse_classes("alpha,beta,alpha")
    monkeypatch.delenv(ENV_GREEK, raising=False)
    with pytest.raises(DataError, match="^data: no image folder given; .* here or in TUNING_GREEK"):
        resolve_data_dir(None)
    monkeypatch.setenv(ENV_GREEK, str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    with pytest.raises(DataError, match="not a folder"):
        resolve_data_dir(tmp_path / "missing")
