"""``mltrack doctor``: end the runs whose process died without ending them.

A run killed by SIGKILL, the OOM killer or a lost machine stays RUNNING forever in MLflow.
Every mltrack run carries its host, process id and start time, and a heartbeat tag that its
writer thread touches every 30 s. A RUNNING run is an orphan when its process is gone (same
host: the pid is not alive, or belongs to a newer process) or, from any machine, when its
heartbeat is older than ``--stale-after``. Orphans end FAILED with ``outcome=failed`` and an
``error`` tag saying why. Sweeps run the same check on their experiment when they start.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mltrack.tracking.process import HEARTBEAT_TAG, HOST_TAG, PID_START_TAG, PID_TAG, is_gone
from mltrack.tracking.spool import end_orphan

DEFAULT_STALE_AFTER_S = 600.0


@dataclass(frozen=True)
class Orphan:
    run_id: str
    run_name: str
    reason: str


def why_orphaned(run: Any, stale_after_s: float, now: float, host: str) -> str | None:
    tags = run.data.tags
    if HEARTBEAT_TAG not in tags:
        return None  # not an mltrack run: not ours to judge
    if tags.get(HOST_TAG) == host:
        pid, started = int(tags[PID_TAG]), float(tags[PID_START_TAG])
        if is_gone(host, pid, started):
            return f"process {pid} on {host} is gone without ending the run"
        return None
    silent = now - float(tags[HEARTBEAT_TAG])
    if silent > stale_after_s:
        return (
            f"no heartbeat from {tags.get(HOST_TAG, '?')} pid {tags.get(PID_TAG, '?')} "
            f"for {silent:.0f}s (limit {stale_after_s:.0f}s)"
        )
    return None


def find(
    client: Any,
    experiment_ids: Sequence[str],
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    now: float | None = None,
) -> list[Orphan]:
    if not experiment_ids:
        return []
    running = client.search_runs(
        list(experiment_ids), filter_string="attributes.status = 'RUNNING'", max_results=50_000
    )
    now = time.time() if now is None else now
    host = socket.gethostname()
    found = []
    for run in running:
        reason = why_orphaned(run, stale_after_s, now, host)
        if reason:
            found.append(Orphan(run.info.run_id, run.info.run_name, reason))
    return found


def end(tracking_uri: str, orphans: Sequence[Orphan]) -> None:
    for orphan in orphans:
        end_orphan(tracking_uri, orphan.run_id, f"ended by mltrack doctor: {orphan.reason}")


def experiment_ids(client: Any, name: str = "") -> list[str]:
    if name:
        found = client.get_experiment_by_name(name)
        return [found.experiment_id] if found else []
    return [e.experiment_id for e in client.search_experiments()]
