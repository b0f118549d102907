"""What a user watches while an export trains: one bar over every network it trains, the
baseline's included, in the style of the study's bar (`tuning.study.progress`); without a bar
(output not a terminal, or `disable`), one line per epoch instead."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from tuning.export.estimate import ExportEstimate, NetworkCost

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"


class ExportProgress:
    """A tqdm bar over an export's whole training, each network weighted by its estimated
    seconds, so the time left counts every network still to come; its postfix names the network,
    its epoch and loss. `on_epoch` is the export's epoch hook and `write` its log: lines go above
    the bar, or straight to `file` when there is none."""

    def __init__(self, *, disable: bool, file: TextIO | None = None) -> None:
        """`disable`: no bar, epoch lines instead. `file`: where both go (default: stderr)."""
        self.disable = disable
        self.file = file or sys.stderr
        self.bar: tqdm | None = None
        self.networks: tuple[NetworkCost, ...] = ()
        self.weights: list[float] = []
        self.index = -1  # the network training now
        self.finished = 0.0  # the weight of the networks before it

    def start(self, estimate: ExportEstimate) -> None:
        """Draw the bar over `estimate`'s networks (nothing to train, or disabled: no bar)."""
        if self.disable or not estimate.networks:
            return
        self.networks = estimate.networks
        self.weights = _weights(estimate.networks)
        self.bar = tqdm(
            total=sum(self.weights),
            desc="export",
            bar_format=BAR_FORMAT,
            dynamic_ncols=True,
            file=self.file,
        )

    def on_epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None:
        """After each epoch of a network (epoch counts from 1; epochs 0: a HyperModel's own)."""
        loss = logs.get("loss", float("nan"))
        if self.bar is None:
            of = f"/{epochs}" if epochs else ""
            accuracy = logs.get("accuracy", float("nan"))
            self.write(f"  epoch {epoch}{of}: loss {loss:.4f}, accuracy {accuracy:.4f}")
            return
        if epoch == 1 and self.index + 1 < len(self.networks):  # the next network began
            if self.index >= 0:
                self.finished += self.weights[self.index]
            self.index += 1
        index = max(self.index, 0)
        done = self.finished + (self.weights[index] * epoch / epochs if epochs else 0.0)
        self.bar.update(min(done, self.bar.total) - self.bar.n)
        network = self.networks[index]
        of = f"/{epochs}" if epochs else ""
        self.bar.set_postfix_str(
            f"network {index + 1}/{len(self.networks)}: trial #{network.trial} seed "
            f"{network.seed}, epoch {epoch}{of}, loss {loss:.4f}",
            refresh=True,
        )

    def write(self, message: str) -> None:
        """A line of the export's own, above the bar if there is one."""
        if self.bar is None:
            self.file.write(message + "\n")
            self.file.flush()
        else:
            self.bar.write(message, file=self.file)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _weights(networks: tuple[NetworkCost, ...]) -> list[float]:
    """Each network's share of the bar: its expected seconds, or, where unknown, the mean of
    the known ones (1 each when none is known)."""
    known = [n.seconds for n in networks if n.seconds is not None]
    fallback = sum(known) / len(known) if known else 1.0
    return [fallback if n.seconds is None else n.seconds for n in networks]
