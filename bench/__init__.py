"""Benchmarks (`make bench`): each module has `run(*, quick: bool) -> dict` and writes to storage/bench/."""
