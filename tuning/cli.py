"""The `tuning` command line. Each subcommand is a thin layer over a library function."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
import typing
from collections.abc import Callable, Sequence

from tuning.device import process_env

# Before any backend is imported: keep TensorFlow's C++ start-up chatter out of the user's
# terminal, let GPU memory grow as needed (so several workers can share a GPU) and keep JAX's
# compilations. The variables, unlike tuning.backend.configure_gpu_memory, hold however early a
# model is built (the study's space description builds some before a trial asks for the device)
# and in re-executed processes.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
for _key, _value in process_env().items():
    os.environ.setdefault(_key, _value)

from tuning.backend import check_backend_name  # noqa: E402
from tuning.console import Console, duration, open_console, verbose_from_env  # noqa: E402
from tuning.errors import TuningError  # noqa: E402

if typing.TYPE_CHECKING:
    from tuning.export.estimate import ExportEstimate

Command = Callable[[argparse.Namespace], int]
STORAGE_HELP = "database URL (default: $TUNING_STORAGE or sqlite:///storage/studies.db)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "study_file", metavar="STUDY.toml", help="the study file, e.g. studies/mnist_cnn.toml"
    )
    parser.add_argument("--storage", help=STORAGE_HELP)
    parser.add_argument(
        "--trials", type=int, help="trials to add in this run (default: [budget] trials)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="stop starting trials after SECONDS (default: [budget] timeout)",
    )
    parser.add_argument(
        "--data",
        help="training data in place of the study file's [data] source: a .npz in the Keras "
        "layout or an image folder (MNIST: default $TUNING_MNIST, else keras.datasets)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="TensorFlow threads for this process (default: all cores); with W workers on one "
        "machine use cores // W",
    )
    parser.add_argument(
        "--retry-minutes",
        type=float,
        help="how long to wait for a lost database before giving up (default: [storage] "
        "retry_minutes, 10)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def cmd_study(args: argparse.Namespace, *, worker: bool = False) -> int:
    """Create or resume a study and add trials; print a summary at the end.

    As a worker (`tuning worker`), the process joins a study others may be running: its sampler
    gets a seed of its own, and `--trials` counts the trials this process runs.
    """
    from tuning import backend
    from tuning.device import detect
    from tuning.reconnect import Reconnect
    from tuning.storage import redact, resolve_storage_url
    from tuning.study.config import load_spec
    from tuning.study.progress import StudyProgress, summary
    from tuning.study.run import open_run
    from tuning.study.workers import ProcessBatch, configure_threads, worker_salt

    console: Console = args.console
    spec = load_spec(args.study_file)
    configure_threads(args.threads)
    _check_positive(args, "trials", "timeout", "retry_minutes")
    n_trials = args.trials or spec.budget.trials
    timeout = args.timeout or spec.budget.timeout
    batch = ProcessBatch.begin(n_trials)
    storage = resolve_storage_url(args.storage)
    # Data, storage, stored protocol and artifact folder are checked before the bar is drawn.
    minutes = args.retry_minutes or spec.storage.retry_minutes
    reconnect = Reconnect(seconds=minutes * 60, say=console.warn)
    salt = worker_salt() if worker else 0
    run = open_run(spec, storage=storage, data=args.data, salt=salt, reconnect=reconnect)
    time_left = None if timeout is None else timeout - (time.monotonic() - batch.start)
    progress = StudyProgress(
        n_trials=n_trials, timeout=timeout, disable=args.no_progress, done=batch.done,
        start=batch.start, file=console.err,
    )  # fmt: skip
    try:
        study = run.optimize(
            n_trials=batch.size,
            timeout=time_left,
            callbacks=[progress],
            on_progress=progress.status,
        )
    except KeyboardInterrupt:
        progress.close()
        console.say(
            f"\nInterrupted: the running trial was marked FAIL; every finished trial is kept in "
            f"{redact(storage)}. Run the same command again to resume."
        )
        return 130
    finally:
        progress.close()  # an error is then printed on a line of its own
    # A fresh process for the next trials, if any: TensorFlow never frees traced functions.
    batch.hand_on(
        args.argv, finished=progress.finished, n_trials=n_trials, timeout=timeout,
        before_exec=console.detach,
    )  # fmt: skip
    device = f"{detect().describe()}, Keras backend {backend.name()}"
    print(summary(study, storage=redact(storage), study_file=args.study_file, device=device))
    return 0


def _check_positive(args: argparse.Namespace, *flags: str) -> None:
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise TuningError(f"--{flag.replace('_', '-')} must be > 0. Received: {value}")


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard until Ctrl-C; warn when it is reachable from other machines."""
    from tuning.dashboard import Dashboard, no_login_warning

    console: Console = args.console
    warning = no_login_warning(args.host, args.port)
    if warning:
        console.warn(warning)
    dashboard = Dashboard(args.storage, host=args.host, port=args.port, artifacts=args.artifacts)
    print(dashboard.banner(), flush=True)
    try:
        dashboard.serve_forever()
    except KeyboardInterrupt:
        console.say("\nDashboard stopped.")
    finally:
        dashboard.close()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Say what the export will train and how long that takes, retrain the best trial on all
    images under a progress bar, test it once, write the model, card and report."""
    from tuning.export.pipeline import export_study
    from tuning.export.progress import ExportProgress
    from tuning.study.config import load_spec
    from tuning.summaries import export_summary

    console: Console = args.console
    spec = load_spec(args.study_file)
    # A bar only on a terminal; in a log, one line per epoch instead.
    progress = ExportProgress(disable=not console.err.isatty(), file=console.err)

    def on_estimate(estimate: ExportEstimate) -> None:
        console.say(_estimate_line(estimate))
        progress.start(estimate)

    try:
        result = export_study(
            spec,
            storage=args.storage,
            data=args.data,
            out=args.out,
            trial=args.trial,
            epoch_scale=args.epoch_scale,
            seeds=args.seeds,
            members=args.members,
            formats=args.formats,
            pick=args.pick,
            baseline=not args.no_baseline,
            log=progress.write,
            on_epoch=progress.on_epoch,
            on_estimate=on_estimate,
        )
    except KeyboardInterrupt:
        progress.close()
        console.say(
            "\nInterrupted: nothing was published; any previous export is unchanged, and the "
            "members trained so far are kept for the next run."
        )
        return 130
    finally:
        progress.close()  # an error is then printed on a line of its own
    print(
        export_summary(result.card, result.out_dir, estimate=result.estimate, took=result.seconds)
    )
    return 0


def _estimate_line(estimate: ExportEstimate) -> str:
    """The estimate in words, with the cheaper choice as the flag that makes it."""
    cheaper = estimate.cheaper
    if cheaper is None:
        return estimate.describe()
    return (
        f"{estimate.describe()}; --seeds {cheaper.seeds} takes about "
        f"{duration(cheaper.seconds, about=True)}"
    )


def cmd_compare(args: argparse.Namespace) -> int:
    """Set export A beside export B on their test images; print the paired comparison."""
    import json

    from tuning.model.compare import compare_exports
    from tuning.summaries import compare_summary
    from tuning.typed_json import to_json

    result = compare_exports(args.a, args.b, resamples=args.resamples, seed=args.seed)
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, **to_json(result)}, indent=2))
        return 0
    print(compare_summary(result, args.a, args.b))
    return 0


def cmd_front(args: argparse.Namespace) -> int:
    """Print a study's accuracy-against-cost front and draw it as a PNG."""
    from pathlib import Path

    from tuning.study.config import load_spec
    from tuning.study.front import describe_front, draw_front, load_front

    spec = load_spec(args.study_file)
    points, cost = load_front(spec, storage=args.storage, cost=args.cost)
    if not points:
        print(f"study '{spec.name}' has no trial with a cost at its top rung yet")
        return 0
    print("\n".join(describe_front(points, cost=cost)))
    out = Path(args.out or f"storage/{spec.name}-front.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    on_front = sum(p.on_front for p in points)
    title = f"{spec.name}: {on_front} trials on the front of {len(points)} at the top rung"
    print(f"wrote {draw_front(points, out, cost=cost, title=title)}")
    return 0


def cmd_nested(args: argparse.Namespace) -> int:
    """Score a study file's whole search by nested CV on its training data; print the result."""
    import dataclasses
    import json

    from tuning.images.folder import parse_classes
    from tuning.study.config import load_spec
    from tuning.study.nested import nested_score
    from tuning.study.workers import configure_threads

    console: Console = args.console
    spec = load_spec(args.study_file)
    configure_threads(args.threads)
    score = nested_score(
        spec,
        data=args.data,
        class_names=parse_classes(args.classes),
        outer_folds=args.folds,
        trials=args.trials,
        log=console.say,
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(score), indent=2))
        return 0
    low, high = score.interval
    print(
        f"Nested CV of study {score.study} on {', '.join(score.class_names)}: accuracy "
        f"{score.accuracy:.3f} ({score.correct}/{score.images}), 95% Wilson interval {low:.3f} "
        f"to {high:.3f}\n  {score.outer_folds} outer folds x {score.trials} trials, "
        f"{score.seconds:.0f} s"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Print the predicted class and its probability for each image."""
    import json

    from tuning.model.predict import format_predictions, predict_images

    predictions = predict_images(args.model, args.images)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    else:
        print(format_predictions(predictions))
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    """Tune, score (nested CV) and train a transfer to an image folder; write model and cards."""
    import shlex

    from tuning.images.folder import parse_classes, skipped_warning
    from tuning.summaries import transfer_summary
    from tuning.transfer.run import run_transfer
    from tuning.transfer.search import Search

    console: Console = args.console

    classes = parse_classes(args.classes)
    # The command recorded in the note and config, with the data folder $TUNING_GREEK gave.
    args.data = args.data or os.environ.get("TUNING_GREEK")
    flags = ("data", "classes", "out", "storage", "study", "trials", "folds", "seed", "members")
    given = [(f"--{f}", str(getattr(args, f))) for f in flags if getattr(args, f) is not None]
    command = shlex.join(["tuning", "transfer", args.model, *(x for pair in given for x in pair)])
    try:
        result = run_transfer(
            args.model,
            data=args.data,
            classes=classes,
            out=args.out,
            storage=args.storage,
            study_name=args.study,
            search=Search(trials=args.trials, outer_folds=args.folds),
            seed=args.seed,
            members=args.members or "best",
            command=command,
            log=console.say,
            on_data=lambda data: _warn_skipped(console, skipped_warning(data.skipped)),
        )
    except KeyboardInterrupt:
        console.say("\nInterrupted: nothing was written; finished trials stay in the study.")
        return 130
    print(transfer_summary(result))
    return 0


def _warn_skipped(console: Console, message: str | None) -> None:
    if message:
        console.warn(message)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `tuning` and its subcommands (one `_add_*` function each)."""
    parser = _Parser(prog="tuning", description="Hyperparameter-tuning studies for Keras CNNs.")
    common = _Parser(add_help=False)
    common.add_argument(
        "--verbose",
        action="store_true",
        default=verbose_from_env(),
        help="show every library log line (TensorFlow, absl, Keras, Optuna); also TUNING_LOG=debug",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = functools.partial(sub.add_parser, parents=[common])
    study = add("study", help="create or resume a study and run trials")
    _add_run_flags(study)
    study.set_defaults(func=cmd_study)
    worker = add("worker", help="join a study as one more worker process (same flags as study)")
    _add_run_flags(worker)
    worker.set_defaults(func=lambda args: cmd_study(args, worker=True))
    _add_dashboard(add)
    _add_export(add)
    _add_compare(add)
    _add_nested(add)
    _add_front(add)
    _add_predict(add)
    _add_transfer(add)
    return parser


def _add_dashboard(add: Callable[..., argparse.ArgumentParser]) -> None:
    dash = add("dashboard", help="open optuna-dashboard on the studies and artifacts")
    dash.add_argument("--storage", help=STORAGE_HELP)
    dash.add_argument(
        "--artifacts", help="artifact folder (default: $TUNING_ARTIFACTS or storage/artifacts)"
    )
    dash.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only: there is no login)",
    )
    dash.add_argument(
        "--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)"
    )
    dash.set_defaults(func=cmd_dashboard)


def _add_export(add: Callable[..., argparse.ArgumentParser]) -> None:
    export = add(
        "export", help="retrain the best trial by its recipe on all images, test it once, export it"
    )
    export.add_argument(
        "study_file", metavar="STUDY.toml", help="the study file, e.g. studies/mnist_cnn.toml"
    )
    export.add_argument("--storage", help=STORAGE_HELP)
    export.add_argument(
        "--data",
        help="the study's training data, if not where its [data] source says (as for study)",
    )
    export.add_argument(
        "--out",
        help="output folder (default: storage/models/<study>, or <study>-trial<N> with --trial)",
    )
    export.add_argument(
        "--trial",
        type=int,
        metavar="N",
        help="export trial N (0: the seed-network baseline) instead of the best at the top rung",
    )
    export.add_argument(
        "--epoch-scale",
        type=float,
        metavar="X",
        help="train the trial's recipe for X times its epochs (default: [export] epoch_scale)",
    )
    export.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="train N networks and ship their ensemble (default: [export] seeds); the baseline "
        "gets N seeds too",
    )
    export.add_argument(
        "--members",
        choices=("seeds", "top"),
        help="the ensemble's members: seeds of the trial, or the top distinct trials "
        "(default: [export] members)",
    )
    export.add_argument(
        "--formats",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        metavar="A,B",
        help="write the model as any of keras, saved_model, onnx, litert, each checked against "
        "Keras (default: [export] formats); model.keras is always written",
    )
    export.add_argument(
        "--pick",
        metavar="RULE",
        help='which trial to export: "best" (the most accurate feasible trial at the top rung) '
        'or "fewest COST within X points" of it, COST one of params, flops, latency_ms '
        "(default: [export] pick)",
    )
    export.add_argument(
        "--no-baseline",
        action="store_true",
        help="do not export the seed network first when no baseline export is stored",
    )
    export.set_defaults(func=cmd_export)


def _add_nested(add: Callable[..., argparse.ArgumentParser]) -> None:
    nested = add(
        "nested",
        help="score a study's whole search by nested CV (for data without a test split)",
    )
    nested.add_argument(
        "study_file", metavar="STUDY.toml", help="e.g. studies/greek_from_scratch.toml"
    )
    nested.add_argument("--data", help="training data in place of the study file's [data] source")
    nested.add_argument(
        "--classes", metavar="A,B,...", help="comma-separated classes to use (default: all)"
    )
    nested.add_argument(
        "--folds", type=int, default=3, metavar="K", help="outer folds (default: 3)"
    )
    nested.add_argument(
        "--trials", type=int, metavar="N", help="trials per outer fold (default: [budget] trials)"
    )
    nested.add_argument("--threads", type=int, help="TensorFlow threads (default: all cores)")
    nested.add_argument("--json", action="store_true", help="print JSON instead of text")
    nested.set_defaults(func=cmd_nested)


def _add_front(add: Callable[..., argparse.ArgumentParser]) -> None:
    front = add("front", help="a study's CV accuracy against cost: the Pareto front, as a PNG")
    front.add_argument("study_file", help="the study's TOML file, e.g. studies/mnist_pareto.toml")
    front.add_argument("--storage", help=STORAGE_HELP)
    front.add_argument(
        "--cost",
        choices=("params", "flops", "latency_ms"),
        help="the cost axis (default: the study's second direction, else its first limit)",
    )
    front.add_argument("--out", help="the PNG to write (default: storage/<study>-front.png)")
    front.set_defaults(func=cmd_front)


def _add_compare(add: Callable[..., argparse.ArgumentParser]) -> None:
    compare = add(
        "compare", help="two exports on the same test images: paired errors, McNemar, interval"
    )
    for name, example in (
        ("a", "storage/models/mnist_cnn"),
        ("b", "storage/models/mnist_cnn-trial0"),
    ):
        compare.add_argument(
            name, metavar=name.upper(), help=f"an export folder or its model file, e.g. {example}"
        )
    compare.add_argument(
        "--resamples", type=int, default=10_000, metavar="N",
        help="paired bootstrap resamples (default: 10000)",
    )  # fmt: skip
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    compare.add_argument("--json", action="store_true", help="print JSON instead of text")
    compare.set_defaults(func=cmd_compare)


def _add_predict(add: Callable[..., argparse.ArgumentParser]) -> None:
    predict = add("predict", help="classify images with an exported model")
    predict.add_argument(
        "model",
        metavar="MODEL",
        help="an exported .keras, .onnx or .tflite file, e.g. storage/models/mnist_cnn/model.keras",
    )
    predict.add_argument(
        "images",
        metavar="IMAGE",
        nargs="+",
        help="PNG or JPEG files of any size (characters: any polarity)",
    )
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.set_defaults(func=cmd_predict)


def _add_transfer(add: Callable[..., argparse.ArgumentParser]) -> None:
    transfer = add("transfer", help="transfer an exported model to the classes of an image folder")
    transfer.add_argument(
        "model",
        metavar="MODEL.keras",
        help="an exported model, e.g. storage/models/mnist_cnn/model.keras",
    )
    transfer.add_argument(
        "--data",
        metavar="DIR",
        help="image folder, one subfolder per class (default: $TUNING_GREEK)",
    )
    transfer.add_argument(
        "--classes",
        metavar="A,B,...",
        help="comma-separated class folders to use, e.g. alpha,beta,gamma (default: all)",
    )
    transfer.add_argument(
        "--out", metavar="DIR", help="output folder (default: storage/models/<transfer study>)"
    )
    transfer.add_argument("--storage", help=STORAGE_HELP)
    transfer.add_argument(
        "--study", help="transfer study name (default: <base study>-<dataset>-<classes>)"
    )
    transfer.add_argument(
        "--trials",
        type=int,
        default=12,
        metavar="N",
        help="tuning trials, also per outer fold (default: 12)",
    )
    transfer.add_argument(
        "--folds",
        type=int,
        default=3,
        metavar="K",
        help="outer folds of the nested CV (default: 3)",
    )
    transfer.add_argument(
        "--seed", type=int, default=42, metavar="S", help="seed of folds, sampler, weights"
    )
    transfer.add_argument(
        "--members",
        choices=("best", "all"),
        help="from an ensemble, freeze its best member, or all members' features side by side "
        "under one head (default: best)",
    )
    transfer.set_defaults(func=cmd_transfer)


# The flag that sets each library parameter an error can name (`TuningError.param`).
FLAGS = {
    "data": "--data",
    "storage": "--storage",
    "out": "--out",
    "trial": "--trial",
    "epoch_scale": "--epoch-scale",
    "seeds": "--seeds",
    "members": "--members",
    "formats": "--formats",
    "pick": "--pick",
    "resamples": "--resamples",
    "classes": "--classes",
    "trials": "--trials",
    "outer_folds": "--folds",
    "threads": "--threads",
    "host": "--host",
    "port": "--port",
}


def error_line(exc: TuningError) -> str:
    """The error as the command line shows it: a parameter at fault is named by its flag."""
    if exc.param is None:
        return str(exc)
    return f"{FLAGS.get(exc.param, exc.param)}: {exc.message}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tuning` console script."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    console = args.console = open_console(verbose=args.verbose)
    try:
        check_backend_name()  # before any command imports Keras, which fails without the choices
        return int(args.func(args))
    except TuningError as exc:
        console.error(error_line(exc))
        return exc.exit_status
    except KeyboardInterrupt:  # before a command's own handler, e.g. while loading data
        console.say("\nInterrupted: nothing was changed.")
        return 130
    except Exception as exc:
        # A failure during work, not a bad input: one line here, the traceback in the log.
        logging.getLogger("tuning").exception("tuning %s failed", args.command)
        log = console.save_log()
        where = f"details in {log}" if log else "traceback above"
        first = (str(exc).strip().splitlines() or [""])[0]
        console.error(f"{type(exc).__name__}: {first} ({where})")
        return 1


if __name__ == "__main__":
    sys.exit(main())
