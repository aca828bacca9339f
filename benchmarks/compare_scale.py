"""``mltrack compare`` against store size: 100, 1,000 and 10,000 runs shaped like a sweep's.

    python -m benchmarks.compare_scale                       # sqlite and one HTTP server
    python -m benchmarks.compare_scale --sizes 100,1000 --reps 3 --no-server
    python -m benchmarks.compare_scale --stores /tmp/scale   # build once, measure again later

Each store holds one experiment of runs in four precision groups, every run with a real run's
params and tags and 12 metrics × 30 epochs plus the summary metrics. Building them fast: one
template run is logged through mltrack (so every row is MLflow's own), then copied in SQL with
new ids and jittered values (logging 3.6 million points through the API would take an hour).

Timed, alternating (the order reverses every repetition, so drift on this shared VM hits all
alike), medians of ``--reps`` with their range:

- ``search_runs``: MLflow's own ``search_runs`` over the experiment, in this process with the
  store already open: what ``compare`` took to read the runs before issue 21;
- ``import + open``: a ``python`` process that imports MLflow and opens the store
  (``MlflowClient``), nothing else, with the garbage-collector settings ``compare`` runs
  with: what any command that opens MLflow's store pays (``compare`` on a database store
  reads without it: ``mltrack.compare.fetch.reading_client``);
- ``--format csv``: the whole ``python -m mltrack.cli compare --format csv`` process, from
  spawn to exit, imports included (the tables, no curves);
- ``--output DIR``: the whole process that also draws the curves and writes the report.

Then the same against one ``mlflow server`` over the largest sqlite store.

Targets (issue 21, sqlite): the ``--format csv`` process ≤ 2 s at 1,000 runs and ≤ 3 s at
10,000; the full report ≤ 2× that.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from mltrack.tracking.run import start_run
from mltrack.tracking.uris import resolve_tracking_uri

ROOT = Path(__file__).resolve().parent.parent

EXPERIMENT = "scale"
GROUPS = ("fp32", "mixed_bf16", "bf16", "mixed_fp16")
EPOCH_METRICS = (
    *("loss", "accuracy", "val_loss", "val_accuracy", "epoch_wall_s", "train_wall_s"),
    *("val_wall_s", "samples_per_s", "epoch_user_cpu_s", "epoch_system_cpu_s", "peak_rss_mb"),
    "mfu",
)
SUMMARY = ("total_wall_s", "total_cpu_s", "test_accuracy", "test_loss", "warmup_epoch_wall_s")
EPOCHS = 30
RUN_TABLES = ("runs", "params", "tags", "metrics", "latest_metrics")


def template(uri: str) -> str:
    """One run as an experiment logs it; returns its id."""
    rng = random.Random(0)
    params = {"precision": GROUPS[0], "batch_size": 64, "epochs": EPOCHS, "learning_rate": 1e-3}
    params.update({f"config.field_{i}": i for i in range(20)})
    with start_run(EXPERIMENT, run_name="template", params=params, tracking_uri=uri) as run:
        run.set_tags({"precision": GROUPS[0], "mltrack.module": "experiments.cifar_amp"})
        for epoch in range(EPOCHS):
            run.end_epoch(epoch, {k: rng.uniform(0.1, 1.0) for k in EPOCH_METRICS})
        run.log_metrics({k: rng.uniform(0.1, 100.0) for k in SUMMARY}, step=0)
    return run.run_id


def build(folder: Path, size: int) -> str:
    """A sqlite store of ``size`` runs; returns its URI."""
    uri = resolve_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    source = template(uri)
    db = sqlite3.connect(folder / "mlflow.db")
    rows = {}
    columns = {}
    for table in RUN_TABLES:
        columns[table] = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
        rows[table] = db.execute(f"SELECT * FROM {table} WHERE run_uuid = ?", (source,)).fetchall()
    rng = random.Random(1)
    for first in range(1, size, 500):
        batch: dict[str, list[tuple[object, ...]]] = {t: [] for t in RUN_TABLES}
        for i in range(first, min(first + 500, size)):
            new_id, group = uuid.uuid4().hex, GROUPS[i % len(GROUPS)]
            scale = rng.uniform(0.9, 1.1)
            for table in RUN_TABLES:
                names = columns[table]
                for row in rows[table]:
                    values = dict(zip(names, row, strict=True))
                    values["run_uuid"] = new_id
                    if table == "runs":
                        values["name"] = f"run-{i}"
                        values["start_time"] = int(values["start_time"]) + i
                    if table in ("metrics", "latest_metrics"):
                        values["value"] = float(values["value"]) * scale
                    if table in ("params", "tags") and values["key"] == "precision":
                        values["value"] = group
                    batch[table].append(tuple(values[n] for n in names))
        for table, items in batch.items():
            marks = ",".join("?" * len(columns[table]))
            db.executemany(f"INSERT INTO {table} VALUES ({marks})", items)
        db.commit()
    db.close()
    return uri


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of ``action``: CPU of this process and of the children it waited
    for (a busy neighbour on this 2-core VM stretches the wall clock more than the CPU)."""
    wall, cpu = time.perf_counter(), cpu_s()
    action()
    return time.perf_counter() - wall, cpu_s() - cpu


def cpu_s() -> float:
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def process(*command: str) -> Callable[[], None]:
    """Run ``python COMMAND`` from spawn to exit, with this checkout's ``mltrack``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run() -> None:
        done = subprocess.run(
            [sys.executable, *command],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")

    return run


# The floor: MLflow imported and its store opened, with compare's collector settings (off while
# it works, the heap frozen for the exit).
OPEN = (
    "import gc, sys; gc.disable(); from mlflow import MlflowClient; "
    "MlflowClient(tracking_uri=sys.argv[1]); gc.freeze()"
)
COLUMNS = ("search_runs", "open", "csv", "full")


def measure(uri: str, reps: int, report_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Wall and CPU seconds per repetition of each action, alternating their order."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    compare = ("-m", "mltrack.cli", "compare", "--experiment", EXPERIMENT, "--tracking-uri", uri)
    actions: dict[str, Callable[[], object]] = {
        "search_runs": lambda: client.search_runs([experiment_id], max_results=50_000),
        "open": process("-c", OPEN, uri),
        "csv": process(*compare, "--format", "csv"),
        "full": process(*compare, "--output", str(report_dir)),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in COLUMNS}
    for rep in range(reps):
        order = list(actions) if rep % 2 == 0 else list(reversed(actions))
        for name in order:
            times[name].append(timed(actions[name]))
    return times


def cell(samples: list[tuple[float, float]]) -> str:
    """Wall median (range), CPU median."""
    wall = [w for w, _ in samples]
    cpu = statistics.median(c for _, c in samples)
    return f"{statistics.median(wall):.2f} ({min(wall):.2f}–{max(wall):.2f}), CPU {cpu:.2f}"


def row(label: str, size: int, t: dict[str, list[tuple[float, float]]]) -> str:
    csv, full = (statistics.median(w for w, _ in t[name]) for name in ("csv", "full"))
    return (
        f"| {label} | {size:,} | {cell(t['search_runs'])} | {cell(t['open'])} | {cell(t['csv'])} "
        f"| {cell(t['full'])}; {full / csv:.2f}× csv |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-server", action="store_true", help="skip the HTTP server")
    parser.add_argument(
        "--stores", default="", help="build the stores in this folder, or reuse those there"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        "| store | runs | search_runs s (in process) | import + open s | "
        "compare --format csv s | compare --output s |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="mltrack-scale-") as tmp:
        for size in sizes:
            folder = Path(args.stores or tmp) / str(size)
            start = time.perf_counter()
            if (folder / "mlflow.db").exists():
                uri = resolve_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
            else:
                folder.mkdir(parents=True)
                uri = build(folder, size)
            built = time.perf_counter() - start
            times = measure(uri, args.reps, Path(tmp) / f"report-{size}")
            print(
                row("sqlite", size, times) + f" <!-- store ready in {built:.0f} s -->", flush=True
            )
        if not args.no_server:
            from tests.test_cli import free_port  # the test suite's helper: a free loopback port

            port = free_port()
            server = subprocess.Popen(
                [
                    *(sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri),
                    *("--port", str(port), "--workers", "2"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                http = f"http://127.0.0.1:{port}"
                wait_for(f"{http}/health")
                times = measure(http, args.reps, Path(tmp) / "report-http")
                print(row("mlflow server (sqlite)", sizes[-1], times), flush=True)
            finally:
                server.terminate()
                server.wait(timeout=30)
    print("\nwall medians (range) and CPU medians, s; whole processes but search_runs")
    print("targets (sqlite): --format csv")
    print("≤ 2 s at 1,000 runs and ≤ 3 s at 10,000, --output ≤ 2× --format csv")
    return 0


def wait_for(url: str, timeout_s: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout_s} s")


if __name__ == "__main__":
    raise SystemExit(main())
