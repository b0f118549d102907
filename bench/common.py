"""Shared by the benchmarks: where results go, the machine they ran on, and resident memory."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

OUT = Path("storage/bench")


def machine() -> str:
    """A one-line description of this machine, named in every result table."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def rss_mib() -> float:
    """Resident memory of this process now (Linux), in MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def save(name: str, result: dict[str, Any], table: str) -> Path:
    """Write `<name>.json` and `<name>.md` under storage/bench/; returns the JSON path."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2))
    (OUT / f"{name}.md").write_text(f"Measured on: {machine()}\n\n{table}\n")
    return path
