"""Continuing an existing run: ``mltrack.start_run(..., resume=RUN_ID)`` and every
experiment's ``--resume RUN_ID`` (as MLflow's and W&B's resume by id).

A run is resumable when its process is gone: it ended (FAILED, KILLED, FINISHED) or its owner
died while it was RUNNING (SIGKILL, out of memory, a lost machine; ``mltrack.tracking.process``).
Its params may not change value: the first that differs is one line naming it, before training
(MLflow would refuse it later, one record at a time). The run goes back to RUNNING under this
process (its host, pid and heartbeat tags), counts its resumptions in ``mltrack.resumed``,
and its epochs go on from the last one it logged (``first_epoch``).

Training state is a checkpoint's: the experiments write one each epoch with ``--checkpoint``
(``checkpoint_dir``), which ``mltrack.torch.fit`` (model, optimizer, scheduler, scaler and step
counters) and ``mltrack.keras.fit`` (the weights: Keras' optimizer starts afresh) restore.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mltrack.cache import cache_dir
from mltrack.errors import UsageError, bad_value
from mltrack.tracking import limits
from mltrack.tracking.process import HOST_TAG, PID_START_TAG, PID_TAG, is_gone

# The metric every tracked epoch logs: its last step is the last epoch the run finished.
EPOCH_METRIC = "epoch_wall_s"


def checkpoint_dir(run_id: str) -> Path:
    """Where a run's training checkpoint lives (``~/.cache/mltrack/checkpoints/RUN_ID``)."""
    return cache_dir() / "checkpoints" / run_id


def check(client: Any, run_id: str, params: Mapping[str, Any]) -> tuple[str, int]:
    """The run's experiment id and first epoch to train, or ``UsageError`` in one line: an
    unknown run, one whose process still runs it, or a param whose value would change."""
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        raise bad_value("--resume", run_id, "the id of an existing run in this store") from exc
    tags = run.data.tags
    if run.info.status == "RUNNING":
        alive = is_gone(tags.get(HOST_TAG, ""), int(tags.get(PID_TAG, "0") or 0),
                        float(tags.get(PID_START_TAG, "0") or 0)) is False  # fmt: skip
        if alive:
            raise bad_value("--resume", run_id, "a run whose process has ended (it is training)")
    logged = run.data.params
    for key, value in limits.params(params).items():
        if key in logged and logged[key] != value:
            raise UsageError(
                f"--resume {run_id}: param {key} was {logged[key]!r}, got {value!r}: a resumed "
                "run keeps its params (start a new run to change it)"
            )
    history = client.get_metric_history(run_id, EPOCH_METRIC)
    first = max((m.step for m in history), default=-1) + 1
    # A process killed between its checkpoint and the store taking that epoch's records (they
    # are in its journal, for `mltrack sync`) goes on after the checkpoint's epoch.
    saved = saved_epoch(run_id)
    return str(run.info.experiment_id), max(first, saved + 1 if saved is not None else 0)


def mark_epoch(run_id: str, epoch: int) -> None:
    """Say which epoch the checkpoint just written holds (after it is in place)."""
    path = checkpoint_dir(run_id) / "epoch.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"epoch": epoch}))
    tmp.replace(path)


def saved_epoch(run_id: str) -> int | None:
    """The epoch a run's checkpoint holds, if it has one."""
    try:
        return int(json.loads((checkpoint_dir(run_id) / "epoch.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
