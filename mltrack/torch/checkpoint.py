"""The training state ``mltrack.torch.fit`` keeps each epoch with ``run.checkpoint`` and
restores for a resumed run (``mltrack.tracking.resume``): the eager model's and the optimizer's
state dicts, the scheduler's and the GradScaler's, and the loop's step counters, in one file written
atomically (a crash mid-write leaves the previous epoch's)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mltrack.errors import bad_value
from mltrack.torch.modules import eager
from mltrack.tracking.resume import mark_epoch

FILE = "checkpoint.pt"


def save(folder: Path, model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any,
         epoch: int, micro_step: int, steps: int) -> None:  # fmt: skip
    """The state after ``epoch``: written beside, then moved over the last one."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "model": eager(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "micro_step": micro_step,
        "optimizer_steps": steps,
    }
    tmp = folder / f"{FILE}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / FILE)
    mark_epoch(folder.name, epoch)


def restore(folder: Path, model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any,
            first_epoch: int) -> tuple[int, int]:  # fmt: skip
    """Load the state a resumed run continues from; its (micro_step, optimizer_steps).
    ``UsageError`` when there is none, or it is not the epoch before ``first_epoch`` (the run
    logged epochs its checkpoint does not hold: training would not be what the epochs say)."""
    path = folder / FILE
    if not path.exists():
        raise bad_value("--resume", folder.name, f"a run with a checkpoint (none at {path})")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["epoch"] != first_epoch - 1:
        raise bad_value(
            "--resume", folder.name, f"a checkpoint of epoch {first_epoch - 1}, the run's last "
            f"logged one (it holds epoch {state['epoch']})"
        )  # fmt: skip
    eager(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    return int(state["micro_step"]), int(state["optimizer_steps"])
