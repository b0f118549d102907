"""`python -m tools.device_check COMMAND`: `prepare` here, `run` on the GPU machine (both
through tools/device_check.sh), and the summary lines and rehearsal inputs the run asks the
venv for."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.device_check import ROOT


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    from tools.device_check.run import SETTINGS

    parser = argparse.ArgumentParser(prog="python -m tools.device_check", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("prepare", help="here: the wheels, MNIST and the carry size (TUNING_MNIST)")
    sub.add_parser(
        "run",
        help="there: install offline, then the steps",
        epilog=SETTINGS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    quick = sub.add_parser("quick-inputs", help="a rehearsal's small MNIST and study files")
    quick.add_argument("mnist", type=Path)
    quick.add_argument("folder", type=Path)
    sub.add_parser("report-env", help="versions, the device, and no TensorFlow")
    for name, argument in (
        ("report-backends", "backends.json"),
        ("report-study", "smoke|mnist_cnn"),
        ("report-export", "model_card.json"),
        ("report-workers", "workers.json"),
    ):
        sub.add_parser(name).add_argument("argument", metavar=argument)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.chdir(ROOT)  # the paths of storage/device and studies/ are the repository's
    try:
        return dispatch(args)
    except (ValueError, RuntimeError) as error:
        print(f"device_check: {error}", file=sys.stderr)
        return 1


def dispatch(args: argparse.Namespace) -> int:
    """Run one command; its exit status."""
    if args.command == "prepare":
        from tools.device_check.prepare import prepare

        prepare(mnist=os.environ.get("TUNING_MNIST"))
        return 0
    if args.command == "run":
        from tools.device_check.run import Settings, run

        return run(Settings.from_env(os.environ))
    from tools.device_check import reports

    if args.command == "quick-inputs":
        reports.quick_inputs(args.mnist, args.folder)
    elif args.command == "report-env":
        reports.report_env()
    else:
        report = {
            "report-backends": reports.report_backends,
            "report-study": reports.report_study,
            "report-export": reports.report_export,
            "report-workers": reports.report_workers,
        }[args.command]
        report(args.argument)
    return 0


if __name__ == "__main__":
    sys.exit(main())
