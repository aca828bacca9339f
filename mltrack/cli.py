"""The ``mltrack`` command. Sub-commands import their heavy dependencies lazily."""

from __future__ import annotations

import argparse
import faulthandler
import gc
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from mltrack.compare.fetch import collector_paused
from mltrack.errors import UsageError, bad_value
from mltrack.tracking import records
from mltrack.tracking.limits import redact_uri
from mltrack.tracking.uris import resolve_tracking_uri


def newest_experiment(uri: str) -> str | None:
    """The id of the experiment that changed last and has runs (the one to open first)."""
    from mltrack.tracking.warmup import STORES

    client = STORES.client(uri)  # creates a new store's tables before `mlflow ui` opens it
    for experiment in client.search_experiments(order_by=["last_update_time DESC"]):
        if client.search_runs([experiment.experiment_id], max_results=1):
            return str(experiment.experiment_id)
    return None


# MLflow 3.17's runs table shows no metric column until one is picked under "Columns", and opens
# in its GenAI mode. Its own "share view" keeps a table view in an experiment tag
# (``mlflow.sharedViewState.KEY``) and opens it from the address (``?viewStateShareKey=KEY``):
# ``mltrack ui`` saves one with the columns a precision comparison reads (those the experiment's
# runs have), metrics first (``columnOrder``), so they are in the first screen even beside the
# assistant panel MLflow opens on a local address; ``workflowType=machine_learning`` (read by
# the UI's WorkflowTypeProvider) selects the model-training mode, sidebar switch included.
VIEW_KEY = "mltrack"
MODEL_TRAINING = "workflowType=machine_learning"
VIEW_PARAMS = ("precision", "batch_size", "accumulation_steps")
VIEW_METRICS = (
    "val_accuracy",
    "test_accuracy",
    "test_pr_auc",
    "total_wall_s",
    "samples_per_s",
    "mfu",
)


def share_runs_view(uri: str, experiment_id: str) -> str:
    """Save the runs-table view and return the query that opens it in the model-training mode."""
    import json

    from mltrack.tracking.spool import tag_experiment
    from mltrack.tracking.warmup import STORES

    runs = STORES.client(uri).search_runs([experiment_id], max_results=100)
    params = [k for k in VIEW_PARAMS if any(k in r.data.params for r in runs)]
    metrics = [k for k in VIEW_METRICS if any(k in r.data.metrics for r in runs)]
    columns = [
        *(f"metrics.`{key}`" for key in metrics),
        *(f"params.`{key}`" for key in params),
        *(f"attributes.`{name}`" for name in ("Models", "Dataset")),
    ]
    order = ["attributes.`Run Name`", *columns, "attributes.`Created`", "attributes.`Duration`"]
    view = {"selectedColumns": columns, "columnOrder": order}
    tag_experiment(uri, experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(view))
    return f"?viewStateShareKey={VIEW_KEY}&{MODEL_TRAINING}"


def _ui(args: argparse.Namespace) -> int:
    """Serve the MLflow UI over the same store the experiments write to.

    Prints the address of the newest experiment's runs table in MLflow's model-training mode,
    with its key metrics and parameters as the first columns, so nobody has to find the mode
    switch or the column picker.
    """
    uri = resolve_tracking_uri(args.tracking_uri)
    base = f"http://{args.host}:{args.port}"
    newest = newest_experiment(uri)
    where = (
        f"{base}/#/experiments/{newest}/runs{share_runs_view(uri, newest)}"
        if newest
        else f"{base}/#/experiments?{MODEL_TRAINING}"
    )
    command = [sys.executable, "-m", "mlflow", "ui", "--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI for {redact_uri(uri)}: {where}", flush=True)
    # The store by environment (MLflow's CLI reads it), so a password in it is on no command
    # line: `ps` shows every user the arguments of every process, not its environment.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    # MLflow 3's server also starts Huey consumer processes for its GenAI jobs (prompt
    # optimization, scorers, trace roll-ups), which browsing training runs never uses: each
    # costs seconds of CPU and a Python process of memory. A user who wants them sets it.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execve(sys.executable, command, env)
    return 0  # pragma: no cover - execv does not return


@collector_paused()  # compare is short and allocates in bulk: MLflow's import, the runs
def _compare(args: argparse.Namespace) -> int:
    """Regenerate the seeds' comparisons from the store."""
    from mltrack.compare import analysis
    from mltrack.compare import command as compare
    from mltrack.compare.analysis import Target
    from mltrack.compare.database import reading_client
    from mltrack.tracking.warmup import STORES

    uri = resolve_tracking_uri(args.tracking_uri)
    client = reading_client(uri, lambda: STORES.client(uri))  # reads; creates no store
    selection = compare.select(
        client,
        experiment=args.experiment,
        filter_string=args.filter,
        run_ids=[r for r in args.runs.split(",") if r] if args.runs else (),
        group_by=args.group_by,
    )
    prices = analysis.read_prices(args.prices) if args.prices else None
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] or None
    report = compare.build(
        client,
        selection,
        baseline=args.baseline,
        cpu_baseline=args.cpu_baseline,
        prices=prices,
        metrics=metrics,
        target=Target.parse(args.target) if args.target else None,
        parity=args.parity,
        parity_tol=args.parity_tol,
        figures=bool(args.output or args.log),  # charts exist only where they are written
    )
    # Standard output links no image: the PNGs exist only where --output writes them.
    if args.format == "csv":
        print(report.csv, end="")
    elif args.format == "html":
        print(report.html(figures=False))
    else:
        print(report.markdown(figures=False))
    if args.output:
        written = report.write(Path(args.output))
        print(f"wrote {', '.join(p.name for p in written)} to {args.output}", file=sys.stderr)
    if args.log:
        experiment = selection.experiments[selection.runs[0].info.experiment_id]
        run_id = compare.log_report(uri, report, experiment, selection.key)
        print(f"logged as run {run_id} (tag mltrack.role=report)", file=sys.stderr)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    """End orphaned RUNNING runs as FAILED, with the reason."""
    from mltrack.tracking import doctor
    from mltrack.tracking.warmup import STORES

    uri = resolve_tracking_uri(args.tracking_uri)
    client = STORES.client(uri)
    ids = doctor.experiment_ids(client, args.experiment)
    if args.experiment and not ids:
        raise UsageError(f"--experiment: got {args.experiment!r}, expected an existing experiment")
    orphans = doctor.find(client, ids, args.stale_after)
    for orphan in orphans:
        print(f"{orphan.run_id} {orphan.run_name}: {orphan.reason}")
    if not args.dry_run:
        doctor.end(uri, orphans)
    verb = "would end" if args.dry_run else "ended"
    print(f"{verb} {len(orphans)} orphaned run(s) as FAILED")
    return 0


def _sync(args: argparse.Namespace) -> int:
    """Deliver the journals of runs that ended (or died) before their store took everything."""
    from mltrack.tracking import spool
    from mltrack.tracking.courier import Busy

    folder = Path(args.spool_dir) if args.spool_dir else spool.spool_dir()
    files = spool.pending(folder)
    if args.discard:
        return _discard(files, args.discard)
    synced = failed = 0
    for path in files:
        try:
            if not spool.ready_to_replay(path):
                print(f"{path.name}: left for its process (still running, or on another host)")
                continue
            done = spool.replay(path)
        except Busy:
            print(f"{path.name}: left to the writer (or sync) delivering it now")
            continue
        except Exception as exc:
            failed += 1
            state = getattr(exc, "state", "")
            refused = str(exc) if state in ("refused", "bad") else records.refusal(exc)
            if refused:
                print(f"{path.name}: {spool.refused_advice(path, refused)}")
                continue
            reason = redact_uri((str(exc).splitlines() or [type(exc).__name__])[0][:200])
            print(f"{path.name}: store still unavailable, kept ({reason})")
            continue
        synced += 1
        print(
            f"{path.stem}: sent {done.metrics} metric points, {done.params} params, "
            f"{done.tags} tags, {done.artifacts} artifacts"
            + (f", ended the run {done.ended}" if done.ended else "")
        )
        if done.torn:
            print(
                f"{path.stem}: lines that were not records (a torn tail) set aside in {done.torn}"
            )
    print(f"{synced} of {len(files)} journal(s) synced from {folder}")
    return 1 if failed else 0


def _discard(files: list[Path], run_ids: list[str]) -> int:
    """``mltrack sync --discard RUN_ID``: delete those runs' journals, undelivered records
    included (the way out for a run whose experiment is gone for good)."""
    from mltrack.tracking import spool

    by_run = {spool.run_of(path): path for path in files}
    unknown = [r for r in run_ids if r not in by_run]
    if unknown:
        known = ", ".join(by_run) or "(none)"
        raise bad_value("--discard", unknown[0], f"the run id of a kept journal: {known}")
    for run_id in run_ids:
        spool.discard(by_run[run_id])
        print(f"{run_id}: journal discarded, its undelivered records with it")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    """Optuna over an experiment module; unknown flags go to the experiment."""
    from mltrack.errors import Terminated
    from mltrack.sweep import Sweep, from_namespace
    from mltrack.tracking.process import sigterm_as_exception

    sweep = Sweep(from_namespace(args, args.passthrough))
    try:
        with sigterm_as_exception():
            study = sweep.run()
    except (KeyboardInterrupt, Terminated) as exc:
        print("mltrack sweep: stopped; the trial in progress ended as KILLED", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 143  # as the experiments do
    summary = sweep.summary(study)
    print(summary)
    return 0


class _Parser(argparse.ArgumentParser):
    """One-line errors with exit code 2, like the experiments."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mltrack",
        description="Browse, compare, sweep and repair tracked precision and training-speed "
        "experiments (MLflow + Optuna). Experiments run as `python -m experiments.NAME`.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ui = sub.add_parser("ui", help="serve the MLflow UI for the tracking store")
    ui.add_argument(
        "--tracking-uri",
        default=None,
        help="store to serve (default: MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=_ui)

    cmp = sub.add_parser("compare", help="tables, leaderboard and curves from runs")
    cmp.add_argument("--experiment", default="", help="one experiment (default: all)")
    cmp.add_argument("--filter", default="", help="MLflow filter, e.g. \"params.epochs = '5'\"")
    cmp.add_argument("--runs", default="", help="comma-separated run ids")
    cmp.add_argument(
        "--group-by",
        default="precision",
        help="a param or tag (precision, model, accumulation_steps, hw.label, ...)",
    )
    cmp.add_argument("--baseline", default="", help="the group the deltas are taken against")
    cmp.add_argument("--cpu-baseline", default="", help="hw.label the speed-up is over")
    cmp.add_argument(
        "--metrics",
        default="",
        help="columns of the mean ± spread table, e.g. "
        "test_accuracy,test_f1_macro,total_wall_s (seed 004)",
    )
    cmp.add_argument("--prices", default="", help="CSV hardware,price_per_hour for costs")
    cmp.add_argument(
        "--target",
        default="",
        help="time to target per group, e.g. val_accuracy=0.95 (>= or <= inferred from the "
        "name, or given: val_loss<=0.3)",
    )
    cmp.add_argument("--parity", default="", help="reference group for per-epoch parity, e.g. fp32")
    cmp.add_argument(
        "--parity-tol", type=float, default=0.01, help="difference that counts as a departure"
    )
    cmp.add_argument(
        "--format", choices=("terminal", "markdown", "html", "csv"), default="terminal"
    )
    cmp.add_argument("--output", default="", help="also write report.md/.html, runs.csv, PNGs")
    cmp.add_argument("--log", action="store_true", help="store the report as a run's artifacts")
    cmp.add_argument("--tracking-uri", default=None)
    cmp.set_defaults(handler=_compare)

    doc = sub.add_parser("doctor", help="end runs whose process died (SIGKILL, OOM) as FAILED")
    doc.add_argument("--experiment", default="", help="one experiment (default: all)")
    doc.add_argument(
        "--stale-after",
        type=float,
        default=600.0,
        help="seconds without a heartbeat before a run on another host is orphaned",
    )
    doc.add_argument("--dry-run", action="store_true", help="list, do not end")
    doc.add_argument("--tracking-uri", default=None)
    doc.set_defaults(handler=_doctor)

    syn = sub.add_parser(
        "sync", help="deliver the journals of runs that ended or died before their store took all"
    )
    syn.add_argument(
        "--spool-dir", default="", help="default: MLTRACK_SPOOL_DIR or ~/.cache/mltrack/spool"
    )
    syn.add_argument(
        "--discard",
        nargs="+",
        default=[],
        metavar="RUN_ID",
        help="delete these runs' journals instead of delivering them (a run whose experiment "
        "was deleted for good)",
    )
    syn.set_defaults(handler=_sync)

    from mltrack.sweep import add_arguments

    sweep = sub.add_parser("sweep", help="Optuna over an experiment module's flags")
    add_arguments(sweep)
    sweep.set_defaults(handler=_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and hasattr(signal, "SIGUSR1"):
        # `kill -USR1 PID` prints every thread's stack to stderr: what a worker that seems
        # stuck is doing (tests dump it before giving up on one).
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        args, rest = build_parser().parse_known_args(argv)
        if rest and args.command != "sweep":
            raise UsageError(f"unrecognized arguments: {' '.join(rest)}")
        args.passthrough = rest
        return int(args.handler(args))
    except UsageError as exc:
        print(f"mltrack: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if argv is None:  # the program itself (mltrack, python -m mltrack.cli): it ends next
            # Left frozen, the heap is not walked once more by Python's finalization: 0.6 s of
            # every command that imported MLflow.
            gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
