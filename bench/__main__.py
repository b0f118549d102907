"""Run the benchmarks: `python -m bench [--quick] [NAME ...]`. Results go to storage/bench/.

`fidelity` trains nothing: it reads a stored study (`--study FILE`, `--storage URL`); nor does
`ensembles`: it reads exports' test predictions (`--models DIR ...`)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# fidelity and ensembles last: with no names given, each is skipped (with a line saying why)
# when what it reads (a study, exports) is not there.
BENCHMARKS = [
    "memory", "workers", "throughput", "backends", "search", "overhead", "cost", "scaling",
    "fidelity", "ensembles",
]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the scripts work")
    parser.add_argument(
        "--study",
        default=None,
        help="fidelity: the study file of the study to read (default: studies/mnist_cnn.toml)",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="fidelity: database URL (default: $TUNING_STORAGE or sqlite:///storage/studies.db)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="ensembles: export folders to read, the first set against the others "
        "(default: storage/models/mnist_cnn storage/models/mnist_cnn-trial0)",
    )
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="default: all")
    args = parser.parse_args(argv)
    from tuning.console import open_console, verbose_from_env
    from tuning.errors import TuningError

    # Results go to standard output; TensorFlow's and Optuna's log lines to the console's log
    # (TUNING_LOG=debug shows them), as for the `tuning` command.
    console = open_console(verbose=verbose_from_env())
    for name in args.names or BENCHMARKS:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        if name in ("fidelity", "ensembles"):
            options: dict[str, Any] = {"models": args.models}
            if name == "fidelity":
                options = {"storage": args.storage}
                if args.study is not None:
                    options["study"] = args.study
            try:
                result = module.run(quick=args.quick, **options)
            except TuningError as exc:
                if args.names:  # asked for by name: a missing study or export is an error
                    console.error(f"python -m bench {name}: {exc}")
                    return 2
                print(f"{name} skipped: {exc}", flush=True)  # `make bench` before any study
                continue
        else:
            result = module.run(quick=args.quick)
        print(json.dumps(result, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
