"""Many training runs writing to one tracking server at once: throughput, drain, loss.

    python -m benchmarks.server_load                        # N = 4, 16, 64; about 15 minutes
    python -m benchmarks.server_load --writers 8 --seconds 20 --outage 0

The shared deployment (docs/stores.md) exists for many workers and one server, so
this starts what it runs: a real PostgreSQL, one real ``mlflow server`` on it, and N writer
processes, each one a run logged through mltrack (its journal, its writer thread) the way a
training logs: per-step ``loss`` and ``lr`` every 50 ms, an epoch's 12 metrics every 2 s
(``end_epoch``), 30 params and 10 tags at the start, one 100 KB artifact at the end. All
writers start logging at the same instant (after their imports) and log for ``--seconds``.

``--outage S`` stops the server (SIGTERM) for S seconds from the middle of the logging window,
then starts it again on the same port and database; MLflow's client retries and the writers'
journals hold what it could not take, with MLflow's default retry settings.

Printed per N: points logged, points the database holds afterwards (read with SQL from its
``metrics`` table, so nothing is counted through the path being measured), points lost (must
be 0; params, tags and artifacts are checked too), points/s delivered (the database's count
over the time from the first point to the last writer's end), and the drain time: how long a
run's end waited for its writer after the last point (median and max over writers).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STEP_S = 0.05  # per-step metrics every 50 ms
EPOCH_S = 2.0  # an epoch's metrics every 2 s
EPOCH_METRICS = (
    *("loss", "accuracy", "val_loss", "val_accuracy", "epoch_wall_s", "train_wall_s"),
    *("val_wall_s", "samples_per_s", "epoch_user_cpu_s", "epoch_system_cpu_s", "peak_rss_mb"),
    "mfu",
)
EXPERIMENT = "server_load"
WRITER = [sys.executable, "-m", "benchmarks.server_load", "--writer"]
HEADER = (
    "| writers | outage | points logged | lost | other losses | points/s offered | "
    "points/s delivered | drain median / max |"
)


def writer(uri: str, start_at: float, seconds: float, index: int) -> None:
    """One run, logging like a training: prints what it logged as one JSON line."""
    from mltrack.tracking.run import start_run

    params = {f"config.field_{i}": i for i in range(30)}
    tags = {f"note.{i}": f"writer {index}" for i in range(10)}
    logged: dict[str, int] = {}
    with start_run(EXPERIMENT, run_name=f"writer-{index}", params=params, tracking_uri=uri) as run:
        run.set_tags(tags)
        rng = random.Random(index)
        time.sleep(max(0.0, start_at - time.time()))
        first = time.time()
        step, epoch, next_epoch = 0, 0, first + EPOCH_S
        while time.time() < first + seconds:
            run.log_metrics({"step_loss": rng.random(), "lr": 1e-3}, step=step)
            for key in ("step_loss", "lr"):
                logged[key] = logged.get(key, 0) + 1
            step += 1
            if time.time() >= next_epoch:
                run.end_epoch(epoch, {k: rng.random() for k in EPOCH_METRICS})
                for key in EPOCH_METRICS:
                    logged[key] = logged.get(key, 0) + 1
                epoch, next_epoch = epoch + 1, next_epoch + EPOCH_S
            time.sleep(max(0.0, first + step * STEP_S - time.time()))
        with tempfile.TemporaryDirectory() as tmp:
            artifact = Path(tmp) / "weights.bin"
            artifact.write_bytes(os.urandom(100_000))
            run.log_artifact(artifact)
        last = time.time()
    ended = time.time()
    line = {"run_id": run.run_id, "logged": logged, "first": first, "last": last, "end": ended}
    print(json.dumps(line), flush=True)


@dataclass
class Load:
    writers: int
    logged: int
    stored: int
    lost: int
    other_lost: list[str]
    points_per_s: float
    drain_median_s: float
    drain_max_s: float


def run_load(writers: int, seconds: float, outage_s: float, folder: Path) -> Load:
    """Start PostgreSQL, a server and ``writers`` writer processes; measure; tear down."""
    import sqlalchemy

    from tests.postgres import postgres_server
    from tests.test_cli import free_port
    from tests.test_server import mlflow_server

    with postgres_server(("mlflow",)) as pg:
        backend, artifacts, port = f"{pg}/mlflow", folder / "artifacts", free_port()
        uri = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "MLTRACK_SPOOL_DIR": str(folder / "spool"),
            "MLTRACK_END_TIMEOUT_S": "600",  # measure the drain, not the default's give-up
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        with mlflow_server(backend, artifacts, port):
            # Imports take ~2 s a process, more with many on 2 cores: start logging after.
            start_at = time.time() + 10 + writers * 1.5
            procs = [
                subprocess.Popen(
                    [*WRITER, uri, str(start_at), str(seconds), str(i)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                for i in range(writers)
            ]
            if outage_s > 0:  # leaving the block stops the server (SIGTERM)
                time.sleep(max(0.0, start_at + seconds / 2 - time.time()))
            else:
                lines = [p.communicate(timeout=3600)[0] for p in procs]
        if outage_s > 0:
            time.sleep(outage_s)
            with mlflow_server(backend, artifacts, port):
                lines = [p.communicate(timeout=3600)[0] for p in procs]
        results = [json.loads(line.strip().splitlines()[-1]) for line in lines if line.strip()]
        engine = sqlalchemy.create_engine(backend, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as db:

            def rows(query: str) -> list[tuple[Any, ...]]:
                return [tuple(r) for r in db.execute(sqlalchemy.text(query))]

            per_key = "SELECT run_uuid, key, count(*) FROM metrics GROUP BY 1, 2"
            counts = {(run, key): n for run, key, n in rows(per_key)}
            params = dict(rows("SELECT run_uuid, count(*) FROM params GROUP BY 1"))
            ours = "SELECT run_uuid, count(*) FROM tags WHERE key LIKE 'note.%' GROUP BY 1"
            tags = dict(rows(ours))
            status = dict(rows("SELECT run_uuid, status FROM runs"))
        engine.dispose()
    other = [f"{writers - len(results)} writer(s) died"] if len(results) < writers else []
    logged = stored = 0
    for r in results:
        run = r["run_id"]
        for key, n in r["logged"].items():
            logged += n
            stored += min(n, counts.get((run, key), 0))
        if params.get(run, 0) < 30 or tags.get(run, 0) < 10 or status.get(run) != "FINISHED":
            other.append(
                f"{run}: params {params.get(run)}, tags {tags.get(run)}, {status.get(run)}"
            )
        if not list(artifacts.rglob(f"{run}/artifacts/weights.bin")):
            other.append(f"{run}: artifact missing")
    span = max(r["end"] for r in results) - min(r["first"] for r in results)
    drains = [r["end"] - r["last"] for r in results]
    return Load(
        writers,
        logged,
        stored,
        logged - stored,
        other,
        stored / span,
        statistics.median(drains),
        max(drains),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", default="4,16,64", help="comma-separated N")
    parser.add_argument("--seconds", type=float, default=60.0, help="logging window per N")
    parser.add_argument("--outage", default="0,20", help="server-down seconds to run, each N")
    parser.add_argument("--writer", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        uri, start_at, seconds, index = args.writer
        writer(uri, float(start_at), float(seconds), int(index))
        return
    print(HEADER)
    print("|---|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.writers.split(",")):
        for outage in (float(x) for x in args.outage.split(",")):
            with tempfile.TemporaryDirectory(prefix="mltrack-load-") as tmp:
                load = run_load(n, args.seconds, outage, Path(tmp))
            print(
                f"| {n} | {outage:g} s | {load.logged:,} | {load.lost} | "
                f"{'; '.join(load.other_lost) or 'none'} | {load.logged / args.seconds:,.0f} | "
                f"{load.points_per_s:,.0f} | "
                f"{load.drain_median_s:.1f} / {load.drain_max_s:.1f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
