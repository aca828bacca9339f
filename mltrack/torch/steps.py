"""The parts of the PyTorch loop's epoch (``mltrack.torch.fit``), each replaceable.

- ``Forward`` computes a micro-batch: ``(model, x, y) -> (outputs, loss)``; the default runs the
  model and the loss function under the precision's autocast. A model that wants more (extra
  inputs, an auxiliary loss) passes its own to ``fit(forward=...)``.
- ``OptimizerStep`` ends an accumulation window: gradients clipped by value (unscaled first
  under a ``GradScaler``), the optimizer step (through the scaler under fp16), the scaler's
  update, a scheduler stepped when the recipe steps it per optimizer step. The gradients are
  dropped (``zero_grad``) at the next window's first backward, after its forward, as a plain
  loop does: dropped right after the step, their memory went back to the operating system
  and was faulted in again for the next window's (ResNet50: 60% more page faults and twice
  the system time per epoch, issue 21).
- ``CompileClock`` times a ``torch.compile``d model's one-off compilation: it happens inside
  the first training micro-step (AOT autograd compiles forward and backward there), so its
  cost is the first micro-step's wall less the second's, both read after a device sync (two
  syncs in a whole training, on the first two micro-steps alone).
- ``Watch`` keeps the epoch's loss sum, correct predictions and the first micro-step whose loss
  was not finite **on the device**: the host reads them once every ``check_every`` optimizer
  steps and at the epoch's end, never per step (on a GPU a read per step is a device
  synchronisation that drains the launch queue). A divergence is therefore noticed at most
  ``check_every`` optimizer steps late, and its exact micro-step is still reported.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

AUTOCAST = {"mixed_bf16": torch.bfloat16, "mixed_fp16": torch.float16}
Forward = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """``torch.autocast`` for the mixed precisions of the vocabulary; nothing for the others."""
    if precision in AUTOCAST:
        with torch.autocast(device.type, dtype=AUTOCAST[precision]):
            yield
    else:
        yield


def default_forward(
    loss_fn: Callable[..., torch.Tensor], precision: str, device: torch.device
) -> Forward:
    """The model's outputs and the loss function's value, under the precision's autocast."""

    def forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[Any, Any]:
        with autocast(precision, device):
            outputs = model(x)
            return outputs, loss_fn(outputs, y)

    return forward


def schedule(scheduler: Any) -> None:
    """Step a learning-rate scheduler. A recipe that steps it every micro-batch under gradient
    accumulation (seed 004's ResNet50) steps it once before the first optimizer step, which
    torch warns about; that order is the recipe's, so the warning is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*lr_scheduler\.step\(\)` before")
        scheduler.step()


class OptimizerStep:
    """The end of an accumulation window (see the module doc); counts skipped steps."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        scaler: Any = None,
        clip: float = 0.0,
        scheduler: Any = None,
        scheduler_every: str = "epoch",
    ) -> None:
        self.optimizer, self.model, self.scaler, self.clip = optimizer, model, scaler, clip
        self.scheduler = scheduler if scheduler_every == "optimizer_step" else None
        self.steps = self.skipped = 0

    def __call__(self) -> None:
        if self.clip:
            if self.scaler is not None:  # clip the true gradients, not the scaled ones
                self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_value_(self.model.parameters(), self.clip)
        if self.scaler is None:
            self.optimizer.step()
        else:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            # A lowered scale: inf gradients, the step was skipped (the scaler syncs anyway).
            self.skipped += int(self.scaler.get_scale() < scale)
        self.steps += 1
        if self.scheduler is not None:
            schedule(self.scheduler)


class CompileClock:
    """``compile_wall_s`` of a compiled model (see the module doc); inactive otherwise."""

    def __init__(self, compiled: bool, device: torch.device) -> None:
        self.walls: list[float] | None = [] if compiled else None
        self.device = device
        self._started = 0.0

    def start(self) -> None:
        if self.walls is not None and len(self.walls) < 2:
            self._started = time.perf_counter()

    def stop(self) -> None:
        if self.walls is not None and len(self.walls) < 2:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.walls.append(time.perf_counter() - self._started)

    def take(self) -> float | None:
        """The compile cost once two micro-steps were timed (then inactive), else None."""
        if self.walls is None or len(self.walls) < 2:
            return None
        first, second = self.walls
        self.walls = None
        return max(0.0, first - second)


class Watch:
    """An epoch's loss and accuracy sums and its first non-finite micro-step, on the device."""

    def __init__(self, device: torch.device, first_step: int) -> None:
        self.sums = torch.zeros(2, device=device)  # loss × samples, correct predictions
        self.step = torch.full((), first_step - 1, dtype=torch.long, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, outputs: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        """One micro-batch, without a host read."""
        loss = loss.detach().float()
        correct = (outputs.detach().argmax(1) == y).sum().float()
        self.sums += torch.stack([loss * len(y), correct])
        self.step += 1
        bad = ~torch.isfinite(loss) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, self.step, self.first_bad)

    def diverged_at(self) -> int | None:
        """The first micro-step with a non-finite loss, if any (one host read)."""
        step = int(self.first_bad)
        return step if step >= 0 else None

    def totals(self) -> tuple[float, float]:
        """The loss summed over samples, and the correct predictions (one host read)."""
        loss, correct = self.sums.tolist()
        return loss, correct
