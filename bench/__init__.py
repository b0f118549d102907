"""Benchmarks (`make bench`): each module has `run(*, quick) -> dict`; results in storage/bench/."""
