"""The seed network's training speed under each Keras backend installed here, side by side.

Each run is a fresh process (Keras fixes its backend once per process) that trains the seed
network by its own recipe (`tuning.training.recipe.train`: batch 32, cosine decay, augmentation)
on a stratified MNIST subset, and reports images per second over the epochs after the first
(the first also traces and compiles), the device and the peak GPU memory. Every round runs every
backend once, the order rotated by one each round; the table gives the median and spread over
rounds, and each backend's speed as a ratio to the first backend's in the same round.

`python -m bench backends [--quick]`; `python -m bench.backends --one NAME ...` is one run.
Full: 3 rounds x 3 epochs x 12,000 images per backend (about 8 minutes on 2 AVX-512 cores with
TensorFlow, JAX and PyTorch). `--quick`: 1 round, 2 epochs of 600 images: proves it runs.
`--rounds`, `--images` and `--epochs` override either size (e.g. `--rounds 1` on a lent GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.common import save
from bench.harness import load_average, spread
from tuning.backend import BACKENDS
from tuning.device import process_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def installed() -> list[str]:
    """The backends whose library is importable here, in `BACKENDS` order."""
    return [name for name in BACKENDS if importlib.util.find_spec(name) is not None]


def one_run(*, images: int, epochs: int, batch: int, seed: int) -> dict[str, Any]:
    """Train the seed network in this process's backend; its speed, device and accuracy."""
    import keras

    from bench.harness import bench_data, seed_hp
    from tuning import backend
    from tuning.device import detect
    from tuning.study.space import CNNHyperModel

    x, y = bench_data(images + images // 4, seed=seed)
    (x, y), validation = (x[:images], y[:images]), (x[images:], y[images:])
    hypermodel = CNNHyperModel()
    recipe = dataclasses.replace(hypermodel.recipe(seed_hp()), epochs=epochs, batch_size=batch)
    keras.utils.set_random_seed(seed)
    model = hypermodel.build(seed_hp())
    clock: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_test_begin(self, logs: Any = None) -> None:  # validation is not training
            clock.append(time.perf_counter() - self.start)

    from tuning.training.recipe import train

    history = train(model, recipe, x, y, validation_data=validation, callbacks=[Clock()], seed=seed)
    return {
        "backend": backend.name(),
        "versions": backend.versions(),
        "device": detect().describe(),
        "img_s": round(images * (len(clock) - 1) / sum(clock[1:]), 1),
        "first_epoch_s": round(clock[0], 2),
        "val_accuracy": round(float(history.history["val_accuracy"][-1]), 4),
        "peak_gpu_mib": (peak / 2**20 if (peak := backend.peak_gpu_bytes()) else None),
    }


def _spawn(name: str, *, images: int, epochs: int, batch: int, seed: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.backends", "--one", name, "--images", str(images)]
    argv += ["--epochs", str(epochs), "--batch", str(batch), "--seed", str(seed)]
    # As the `tuning` command does: GPU memory taken as needed, so the peak is what training held.
    env = {**process_env(), **os.environ, "KERAS_BACKEND": name, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: {done.stderr.strip().splitlines()[-1:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(
    quick: bool = False,
    backends: Sequence[str] | None = None,
    batch: int = 32,
    *,
    rounds: int | None = None,
    images: int | None = None,
    epochs: int | None = None,
) -> dict[str, Any]:
    names = list(backends or installed())
    default_rounds, default_images, default_epochs = (1, 600, 2) if quick else (3, 12_000, 3)
    rounds, images, epochs = (
        rounds or default_rounds,
        images or default_images,
        epochs or default_epochs,
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        results = {}
        for name in order:
            results[name] = _spawn(name, images=images, epochs=epochs, batch=batch, seed=r)
            runs[name].append(results[name])
            print(f"round {r + 1}: {name} {results[name]['img_s']} img/s", flush=True)
        for name in names:
            ratios[name].append(results[name]["img_s"] / results[names[0]]["img_s"])
    rows = [
        "| backend | versions | img/s (mean ± std) | median (min to max) | "
        f"ratio to {names[0]}, median (min to max) | first epoch s | val. acc. | peak GPU MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for name in names:
        speeds = spread([run_["img_s"] for run_ in runs[name]], 1)
        ratio = spread(ratios[name], 3)
        peaks = [p for run_ in runs[name] if (p := run_["peak_gpu_mib"]) is not None]
        summary[name] = {"img_s": speeds, "ratio": ratio, "peak_gpu_mib": max(peaks, default=None)}
        versions = ", ".join(f"{k} {v}" for k, v in runs[name][0]["versions"].items())
        first = statistics.median(run_["first_epoch_s"] for run_ in runs[name])
        accuracy = statistics.median(run_["val_accuracy"] for run_ in runs[name])
        rows.append(
            f"| {name} | {versions} | {speeds['mean']:.0f} ± {speeds['std']:.0f} | "
            f"{speeds['median']:.0f} ({speeds['min']:.0f} to {speeds['max']:.0f}) | "
            f"{ratio['median']:.2f} ({ratio['min']:.2f} to {ratio['max']:.2f}) | {first:.1f} | "
            f"{accuracy:.4f} | {summary[name]['peak_gpu_mib'] or '-'} |"
        )
    device = runs[names[0]][0]["device"]
    table = (
        f"Seed network, its recipe, batch {batch}: {rounds} round(s) x {epochs} epochs x "
        f"{images:,} images per backend, on {device}\n\n" + "\n".join(rows)
    )
    print(table, flush=True)
    result = {
        "device": device,
        "rounds": rounds,
        "images": images,
        "epochs": epochs,
        "batch": batch,
        "load_average_after": load_average(),
        "summary": summary,
        "runs": runs,
    }
    save("backends", result, table)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python -m bench.backends` (the device check's test parses its calls)."""
    parser = argparse.ArgumentParser(prog="python -m bench.backends", description=__doc__)
    parser.add_argument("--one", choices=BACKENDS, help="one run in this process's backend")
    parser.add_argument("--images", type=int, help="training images (default: 12,000)")
    parser.add_argument("--epochs", type=int, help="epochs, the first not timed (default: 3)")
    parser.add_argument("--rounds", type=int, help="rounds of every backend (default: 3)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, help="default: installed")
    parser.add_argument("--quick", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.one:
        kwargs = {"images": args.images or 12_000, "epochs": args.epochs or 3}
        print(json.dumps(one_run(seed=args.seed, batch=args.batch, **kwargs)), flush=True)
    else:
        sizes = {"rounds": args.rounds, "images": args.images, "epochs": args.epochs}
        run(quick=args.quick, backends=args.backends, batch=args.batch, **sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
