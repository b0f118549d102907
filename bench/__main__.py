"""Run the benchmarks: `python -m bench [--quick] [NAME ...]`. Results go to storage/bench/."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCHMARKS = ["memory", "workers", "throughput", "search", "overhead", "scaling"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the scripts work")
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="default: all")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in args.names or BENCHMARKS:
        print(f"== {name}", flush=True)
        result = importlib.import_module(f"bench.{name}").run(quick=args.quick)
        print(json.dumps(result, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
