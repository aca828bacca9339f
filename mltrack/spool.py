"""The local spool: what a run could not send to its store, on disk until ``mltrack sync``.

One JSON-lines file per run (``<spool dir>/<run_id>.jsonl``): a header naming the run and its
tracking URI, then ``metric``, ``tags``, ``artifact`` (a copy kept in ``<run_id>.files/``) and
``end`` records in the order they happened. Each
append is fsync'd. Replaying is idempotent: metric points keep their original timestamps and
MLflow's store drops exact duplicates, tags are overwritten with the same values, and ending
an ended run again sets the same status.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MAX_METRICS_PER_BATCH = 1000


def append(path: Path, header: Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists()
    with path.open("a") as handle:
        if fresh:
            handle.write(json.dumps({"type": "run", **header}) + "\n")
        for record in records:
            handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def keep_file(path: Path, source: Path, artifact_path: str | None) -> Path:
    """Copy an artifact beside the spool file (``<run_id>.files/``) until it can be sent."""
    folder = path.with_suffix(".files") / (artifact_path or "")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    shutil.copy2(source, target)
    with target.open("rb") as handle:
        os.fsync(handle.fileno())
    return target


def read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not lines or lines[0].get("type") != "run":
        raise ValueError(f"{path}: not an mltrack spool file (no header)")
    return lines[0], lines[1:]


def replay(path: Path, client: Any = None) -> dict[str, int]:
    """Send a spool file's records to its store, then delete it; raise if the store is away."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    header, records = read(path)
    client = client or MlflowClient(tracking_uri=header["tracking_uri"])
    run_id = header["run_id"]
    metrics = [
        Metric(r["key"], r["value"], r["timestamp_ms"], r["step"])
        for r in records
        if r["type"] == "metric"
    ]
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    tags = {k: v for r in records if r["type"] in ("tags", "end") for k, v in r["tags"].items()}
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    artifacts = [r for r in records if r["type"] == "artifact"]
    for record in artifacts:
        client.log_artifact(run_id, record["file"], record["artifact_path"])
    ends = [r for r in records if r["type"] == "end"]
    if ends:
        client.set_terminated(run_id, status=ends[-1]["status"])
    path.unlink()
    shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)
    return {
        "metrics": len(metrics),
        "tags": len(tags),
        "artifacts": len(artifacts),
        "ended": len(ends),
    }
