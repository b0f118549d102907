"""`tuning predict`: arbitrary pictures in, the card's labels and probabilities out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from tests.helpers import SMALL_NET, save_digit_model
from tuning.cli import main
from tuning.errors import ImageError, ModelError
from tuning.images.preprocess import prepare_image
from tuning.model.card import CARD_FILE
from tuning.model.predict import predict_images

REAL_MNIST = Path(os.environ.get("TUNING_MNIST", "/nonexistent")).is_file()


@pytest.fixture(scope="module")
def digits(mnist_npz: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(mnist_npz) as data:
        return data["x_test"][:12], data["y_test"][:12]


@pytest.fixture(scope="module")
def model_dir(mnist_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained for a few seconds, saved with a digit card like an export's."""
    return save_digit_model(mnist_npz, tmp_path_factory.mktemp("model"), SMALL_NET, epochs=3)


def render(
    digit: np.ndarray, *, dark_on_light: bool, offset: tuple[int, int], mode: str
) -> Image.Image:
    """An MNIST digit as a user's picture: 5x larger, anywhere on a bigger canvas."""
    big = Image.fromarray(digit).resize((140, 140), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (360, 280), 0)
    canvas.paste(big, offset)
    if dark_on_light:
        canvas = Image.fromarray(255 - np.asarray(canvas))
    if mode == "I;16":
        return Image.fromarray(np.asarray(canvas).astype(np.uint16) * 257)
    return canvas.convert(mode)


@pytest.mark.skipif(not REAL_MNIST, reason="needs real digits: set TUNING_MNIST")
def test_re_rendered_digits_get_the_same_class_as_the_originals(
    model_dir: Path, digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """Inverted, off-centre, enlarged, in RGB, RGBA, 16-bit or JPEG: the prediction holds."""
    x, _ = digits
    model = keras.saving.load_model(model_dir / "model.keras", safe_mode=True)
    on_originals = model.predict(x[..., None], verbose=0).argmax(axis=1)
    modes = ["L", "RGB", "RGBA", "I;16"]
    paths = []
    for i, digit in enumerate(x):
        image = render(
            digit,
            dark_on_light=i % 2 == 0,
            offset=(15 * i, 130 - 10 * i),
            mode=modes[i % len(modes)],
        )
        path = tmp_path / f"digit{i}.{'jpg' if i == 5 else 'png'}"
        image.convert("RGB").save(path) if i == 5 else image.save(path)
        paths.append(path)
    predictions = predict_images(model_dir / "model.keras", paths)
    agree = [p.index == int(o) for p, o in zip(predictions, on_originals, strict=True)]
    assert sum(agree) >= len(agree) - 1
    # Each probability is the network's own for the picture made MNIST-like.
    prepared = np.stack([prepare_image(path) for path in paths])[..., None]
    expected = model.predict(prepared, verbose=0).max(axis=1)
    assert [p.probability for p in predictions] == pytest.approx(expected.tolist(), abs=1e-6)
    for prediction in predictions:
        assert prediction.label == str(prediction.index)
        assert prediction.top[0]["probability"] == prediction.probability
        assert prediction.top[0]["probability"] >= prediction.top[1]["probability"]


def test_labels_come_from_the_model_card(
    model_dir: Path, tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    letters = tmp_path / "letters"
    letters.mkdir()
    (letters / "model.keras").write_bytes((model_dir / "model.keras").read_bytes())
    names = [chr(0x3B1 + i) for i in range(10)]  # Greek small letters alpha, beta, ...
    (letters / CARD_FILE).write_text(json.dumps({"class_names": names}), encoding="utf-8")
    image = tmp_path / "x.png"
    render(digits[0][0], dark_on_light=True, offset=(40, 40), mode="L").save(image)
    [prediction] = predict_images(letters / "model.keras", [image])
    assert prediction.label == names[prediction.index]


def test_cli_prints_text_and_json(
    model_dir: Path,
    tmp_path: Path,
    digits: tuple[np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    images = []
    for i in range(2):
        images.append(tmp_path / f"d{i}.png")
        render(digits[0][i], dark_on_light=True, offset=(30, 30), mode="L").save(images[-1])
    model = str(model_dir / "model.keras")
    assert main(["predict", model, *map(str, images)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == str(images[0])
    assert main(["predict", model, *map(str, images), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [p["image"] for p in payload] == list(map(str, images))
    assert all(p["label"] in [str(d) for d in range(10)] for p in payload)


def test_a_bad_image_fails_the_call_naming_it(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "fake.png"
    fake.write_text("no pixels here")
    with pytest.raises(ImageError, match=r"fake\.png: not an image"):
        predict_images(model_dir / "model.keras", [fake])
    assert main(["predict", str(model_dir / "model.keras"), str(fake)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: {fake}: not an image; expected a PNG or JPEG file"
    )


def test_an_unsafe_model_is_refused_by_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = keras.Input((28, 28, 1))
    flat = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Lambda(lambda t: t)(flat))
    path = tmp_path / "unsafe.keras"
    keras.Model(inputs, outputs).save(path)
    image = tmp_path / "x.png"
    Image.new("L", (40, 40), 255).save(image)
    with pytest.raises(ModelError, match="refused"):
        predict_images(path, [image])
    assert main(["predict", str(path), str(image)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ") and "unsafe deserialization" in err and len(err.splitlines()) == 1
    )


@pytest.fixture(scope="module")
def deployed(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The saved digit model with Greek labels on its card, also as model.onnx and model.tflite
    beside it, as an export writes them."""
    from tuning.model.file import load_model_file
    from tuning.model.formats import write_formats

    folder = tmp_path_factory.mktemp("deployed")
    (folder / "model.keras").write_bytes((model_dir / "model.keras").read_bytes())
    names = [chr(0x3B1 + i) for i in range(10)]  # Greek small letters alpha, beta, ...
    (folder / CARD_FILE).write_text(json.dumps({"class_names": names}), encoding="utf-8")
    write_formats(load_model_file(folder / "model.keras"), folder, ("keras", "onnx", "litert"))
    return folder


@pytest.mark.parametrize("name", ["model.onnx", "model.tflite"])
def test_onnx_and_litert_files_predict_what_the_keras_file_does_with_the_card_beside_them(
    deployed: Path,
    digits: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    images = []
    for i in range(3):
        images.append(tmp_path / f"d{i}.png")
        render(digits[0][i], dark_on_light=i == 1, offset=(20, 30), mode="L").save(images[-1])
    expected = predict_images(deployed / "model.keras", images)
    got = predict_images(deployed / name, images)
    assert [p.label for p in got] == [p.label for p in expected]
    assert got[0].label in [chr(0x3B1 + i) for i in range(10)]  # the card's names
    assert [p.probability for p in got] == pytest.approx(
        [p.probability for p in expected], abs=1e-5
    )
    assert main(["predict", str(deployed / name), str(images[0])]) == 0
    assert capsys.readouterr().out.split()[1] == expected[0].label


def test_an_onnx_file_that_is_no_onnx_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_text("<html>a page saved by mistake</html>")
    image = tmp_path / "x.png"
    Image.new("L", (40, 40), 255).save(image)
    assert main(["predict", str(fake), str(image)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {fake}: not an ONNX model that ONNX Runtime can load (")
