"""A PyTorch training loop any ``nn.Module`` can use, tracked like the Keras runs.

What it does that a notebook loop usually gets wrong:

- **Precision** from the shared vocabulary: ``fp64``/``fp32``/``fp16``/``bf16`` cast the model
  and inputs; ``mixed_bf16`` runs the forward pass under ``torch.autocast(bfloat16)``;
  ``mixed_fp16`` runs ``torch.autocast(float16)`` with a ``GradScaler`` on the run's device,
  a CPU included (torch 2.15 has both there; slow, but what was asked is what runs and what is
  labelled). ``Settings(loss_scaling=False)`` drops the scaler, as the seed-004 ResNet50 did.
- **Gradient accumulation** that equals the big batch: every micro-batch loss is weighted by
  its share of the samples in its accumulation window, so k micro-batches of b give the same
  update as one batch of k·b, including a short last micro-batch and a last partial window.
  ``accumulation_loss="divide"`` weighs every micro-batch 1/k instead (seed 004's ``loss /
  accum_iter``), which differs only in a short last batch or window.
- **Schedules and clipping** where a recipe puts them: a learning-rate scheduler stepped every
  micro-batch (seed 004's OneCycleLR), every optimizer step or every epoch; gradients clipped
  by value before the optimizer step (unscaled first under a ``GradScaler``).
- **Per epoch**: the training loss and running accuracy (in training mode, as computed for
  the steps), the evaluation's ``val_*`` scores (``classification_scores``), the rate.
- **Honest timing**: data-wait (blocked on the loader) apart from compute; on CUDA the clock
  is read after ``torch.cuda.synchronize()``; peak GPU memory per epoch.
- **Divergence**: a NaN/Inf loss stops training as ``diverged`` with its exact micro-step; the
  flag is kept on the device and read every ``Settings.check_every`` optimizer steps and at
  each epoch's end, so there is no host read per step (``mltrack/torch/steps.py``).
- **Under a launcher** (``torchrun``): DistributedDataParallel, sharded data, the job's
  ledger and decisions taken together (``mltrack/torch/ddp.py``, ``mltrack.tracking.distributed``).
- **A ``torch.compile``d model**: FLOPs counted and exports made on the eager module, the
  compile's one-off cost logged apart as ``compile_wall_s`` (it falls in epoch 0, which
  ``steady_*`` figures leave out).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mltrack.measure.ledger import Ledger
from mltrack.measure.metrics import classification_scores
from mltrack.measure.precision import COMPUTE_DTYPE
from mltrack.torch import checkpoint, ddp
from mltrack.torch.batches import batch_norm_drop, loader_batch_sizes, window_weights
from mltrack.torch.modules import eager, is_compiled
from mltrack.torch.steps import (
    CompileClock,
    Forward,
    OptimizerStep,
    Watch,
    autocast,
    default_forward,
    schedule,
)
from mltrack.tracking import distributed, resume
from mltrack.tracking.run import Run

CAST = {"fp64": torch.float64, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Settings:
    precision: str = "fp32"
    accumulation_steps: int = 1
    pin_memory: bool = False
    non_blocking: bool = False
    num_workers: int = 0
    channels_last: bool = False
    device: str = "auto"
    loss_scaling: bool = True  # a GradScaler under mixed_fp16
    clip_grad_value: float = 0.0  # clip each gradient element to ±value before a step; 0: off
    accumulation_loss: str = "samples"  # or "divide": each micro-batch loss / k
    compile: bool = False  # torch.compile the prepared model (prepare)
    compile_mode: str = "default"  # torch.compile's mode: reduce-overhead, max-autotune, ...
    # Optimizer steps between host reads of the divergence flag: no device sync per step.
    check_every: int = 50

    def resolved_device(self) -> torch.device:
        """The device asked for; in a distributed job, "auto" and "cuda" mean the rank's own
        GPU (``cuda:LOCAL_RANK``)."""
        here = distributed.world()
        if self.device == "auto" or (self.device == "cuda" and here.torch):
            return (
                distributed.device(here)
                if here.torch
                else torch.device("cuda" if torch.cuda.is_available() else "cpu")
            )
        return torch.device(self.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_peak(device: torch.device) -> Callable[[], float | None] | None:
    if device.type != "cuda":
        return None

    def peak() -> float:
        value = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        return value

    return peak


def prepare(model: nn.Module, settings: Settings, precision: str) -> nn.Module:
    device = settings.resolved_device()
    model = model.to(device)
    if precision in CAST:
        model = model.to(CAST[precision])
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if settings.compile:  # compiled lazily, in the first step: fit logs it as compile_wall_s
        model = torch.compile(model, mode=settings.compile_mode)
    return model


def _to_device(
    x: torch.Tensor, device: torch.device, settings: Settings, dtype: Any
) -> torch.Tensor:
    x = x.to(device, non_blocking=settings.non_blocking)
    if x.is_floating_point() and dtype is not None:
        x = x.to(dtype)
    if settings.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def _outputs(
    model: nn.Module,
    loader: Any,
    loss_fn: Callable[..., torch.Tensor],
    settings: Settings,
    precision: str,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The logits (N × classes) and labels of ``loader``'s samples, and their summed loss."""
    device = settings.resolved_device()
    model.eval()
    loss_sum, logits, labels = 0.0, [], []
    for x, y in loader:
        x = _to_device(x, device, settings, CAST.get(precision))
        y = y.to(device, non_blocking=settings.non_blocking)
        with autocast(precision, device):
            out = model(x)
        loss_sum += float(loss_fn(out.float(), y)) * len(y)
        logits.append(out.float().cpu().numpy())
        labels.append(y.cpu().numpy())
    if not logits:  # a rank's shard of an evaluation set smaller than the world
        return np.empty((0, 0), np.float32), np.empty(0, np.int64), 0.0
    return np.concatenate(logits), np.concatenate(labels), loss_sum


def evaluate(
    model: nn.Module,
    loader: Any,
    loss_fn: Callable[..., torch.Tensor],
    settings: Settings,
    precision: str,
) -> dict[str, float]:
    """``classification_scores`` and the mean ``loss`` over ``loader``'s whole dataset; in a
    distributed job every rank evaluates a shard and gets the whole set's scores
    (``mltrack.torch.ddp.evaluate``)."""

    def one(module: nn.Module, part: Any) -> tuple[np.ndarray, np.ndarray, float]:
        return _outputs(module, part, loss_fn, settings, precision)

    if distributed.world().torch:
        logits, labels, loss_sum = ddp.evaluate(one, model, loader)
    else:
        logits, labels, loss_sum = one(model, loader)
    scores = classification_scores(labels, logits, loader.batch_size or len(labels))
    scores["loss"] = loss_sum / max(len(labels), 1)
    return scores


def _flops(
    model: nn.Module, loss_fn: Callable[..., torch.Tensor], loader: Any, settings: Settings
) -> float:
    """Training FLOPs per sample, counted on two samples of the (unshuffled) loader."""
    from mltrack.measure.efficiency import torch_flops_per_sample

    x, y = next(iter(loader))
    device = settings.resolved_device()
    x = _to_device(x[:2], device, settings, CAST.get(settings.precision))
    with autocast(settings.precision, device):
        return torch_flops_per_sample(model, loss_fn, x, y[:2].to(device))


def _progress(loader: Any, description: str) -> Any:
    """A progress bar over the batches on a terminal (as Keras shows); in logs and CI only the
    one line per epoch that ``fit`` prints."""
    if not sys.stderr.isatty():
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=description, unit="batch", leave=False, dynamic_ncols=True)


def fit(
    run: Run,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Any,
    test_loader: Any,
    *,
    epochs: int,
    settings: Settings,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    scheduler: Any = None,
    scheduler_every: str = "epoch",
    forward: Forward | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """Train ``model`` (already ``prepare``-d) and log each epoch; returns it and the summary.

    ``scheduler`` steps every ``"micro_batch"``, ``"optimizer_step"`` or ``"epoch"`` (after
    the epoch's validation); ``learning_rate`` (the first parameter group's) is logged per
    epoch as it was at the epoch's last step. ``forward``: your own micro-batch computation
    (``mltrack.torch.steps.Forward``); by default the model and ``loss_fn`` under autocast.
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    device = settings.resolved_device()
    parallel = distributed.world().torch  # DistributedDataParallel under a launcher
    precision = settings.precision
    run.set_tags(
        {"precision": precision, "torch.precision_run": precision, "torch.device": str(device)}
    )
    forward = forward or default_forward(loss_fn, precision, device)
    scaled = precision == "mixed_fp16" and settings.loss_scaling
    scaler = torch.amp.GradScaler(device.type) if scaled else None
    step = OptimizerStep(
        optimizer, model, scaler, settings.clip_grad_value, scheduler, scheduler_every
    )
    k = settings.accumulation_steps
    returned = model  # the caller's module: without the DDP wrapper (compiled if it was)
    clock = CompileClock(is_compiled(model), device)
    timer = None
    if parallel:
        train_loader = ddp.shard_training(train_loader)
        model = ddp.wrap(model, device)
        timer = ddp.time_communication(model, device)
    sizes = loader_batch_sizes(train_loader)
    dropped = batch_norm_drop(model, sizes)
    if dropped:
        sizes = sizes[:-1]
        run.log_params({"train.dropped_last_batch_samples": dropped})
        print(
            f"dropping each epoch's last training batch of {dropped} sample (BatchNorm cannot "
            "train on one), as drop_last would",
            flush=True,
        )
    divide = settings.accumulation_loss == "divide"
    weights = [1 / k] * len(sizes) if divide else window_weights(sizes, k)
    ledger = Ledger(gpu_peak_mb=gpu_peak(device))
    # The evaluation's scores need scikit-learn: imported now, not inside epoch 0's val_wall_s
    # (about a second; found by the timing test's reference pass).
    import sklearn.metrics  # noqa: F401

    if run.is_rank_zero:  # the job's efficiency is rank 0's to log (the peak: one calibration)
        flops = _flops(eager(model), loss_fn, test_loader, settings)  # once, on the eager one
        dtype = COMPUTE_DTYPE[precision]
        run.log_params(ledger.measure_efficiency(flops, dtype, "torch", run.set_tags))
    ledger.begin()
    micro_step = 0  # where checkpoints live is asked only when one is kept (the run's id)
    saved = resume.checkpoint_dir(run.run_id) if run.first_epoch or run.checkpoint else Path()
    if run.first_epoch:  # a resumed run: its model, optimizer and counters as it left them
        micro_step, step.steps = checkpoint.restore(
            saved, model, optimizer, scheduler, scaler, run.first_epoch
        )
    record: dict[str, float] = {}
    for epoch in range(run.first_epoch, epochs):
        model.train()
        ddp.set_epoch(train_loader, epoch)
        ledger.start_epoch()
        watch = Watch(device, micro_step)
        data_wait, samples, bad = 0.0, 0, None
        waited = started = time.perf_counter()
        for i, (x, y) in enumerate(_progress(train_loader, f"epoch {epoch + 1}/{epochs}")):
            data_wait += time.perf_counter() - waited
            if i == len(weights):  # the last batch batch_norm_drop dropped
                break
            x = _to_device(x, device, settings, CAST.get(precision))
            y = y.to(device, non_blocking=settings.non_blocking)
            window_end = (i + 1) % k == 0 or i + 1 == len(weights)
            clock.start()
            # DDP all-reduces gradients in backward: only at the window's last micro-batch.
            with contextlib.nullcontext() if window_end or not parallel else model.no_sync():
                outputs, loss = forward(model, x, y)
                weighted = loss.float() * weights[i]
                if i % k == 0:  # a window's first backward: the last window's gradients go
                    optimizer.zero_grad(set_to_none=True)
                (scaler.scale(weighted) if scaler else weighted).backward()
            clock.stop()
            watch.add(outputs, loss, y)
            samples += len(y)
            micro_step += 1
            if window_end:
                if (step.steps + 1) % settings.check_every == 0:  # a host read every N steps
                    bad = watch.diverged_at()
                    bad = distributed.first_divergence(bad) if parallel else bad
                    if bad is not None:  # before this window's (non-finite) step
                        break
                step()
            if scheduler is not None and scheduler_every == "micro_batch":
                schedule(scheduler)
            waited = time.perf_counter()
        _sync(device)
        train_phase = time.perf_counter() - started
        if bad is None:
            bad = watch.diverged_at()
            bad = distributed.first_divergence(bad) if parallel else bad
        if parallel:  # one model on every rank for evaluation and export
            ddp.broadcast_buffers(model)
        loss_sum, hits = watch.totals()
        record = {"data_wait_s": data_wait, "compute_s": train_phase - data_wait}
        if timer is not None:
            record["comm_wait_s"] = timer.take()
        if (compile_s := clock.take()) is not None:  # torch.compile's one-off cost: epoch 0
            run.log_metrics({"compile_wall_s": compile_s}, step=0)
            run.set_tags({"torch.compiled": "true", "compile.in_epoch": str(epoch)})
        record["micro_steps"] = float(micro_step)
        record["optimizer_steps"] = float(step.steps)
        record["learning_rate"] = float(optimizer.param_groups[0]["lr"])
        if scaler:
            record["loss_scale"] = float(scaler.get_scale())
            record["skipped_steps"] = float(step.skipped)
        if bad is not None:
            run.stop("diverged", epoch=epoch, step=bad, loss=float("nan"))
            record = _epoch_record(ledger, record, samples, parallel)
            run.end_epoch(epoch, {**record, "loss": float("nan")})
            break
        record["loss"] = loss_sum / max(samples, 1)
        record["accuracy"] = hits / max(samples, 1)  # running, in training mode
        ledger.start_validation()
        scores = evaluate(model, test_loader, loss_fn, settings, precision)
        _sync(device)
        ledger.end_validation()
        record = _epoch_record(ledger, record, samples, parallel)
        record.update({f"val_{k}": v for k, v in scores.items()})
        if scheduler is not None and scheduler_every == "epoch":
            schedule(scheduler)
        if run.checkpoint and run.is_rank_zero:  # before the epoch is logged: a logged epoch
            state = (model, optimizer, scheduler, scaler)  # is one a resume can continue from
            checkpoint.save(saved, *state, epoch, micro_step, step.steps)
        run.end_epoch(epoch, record)
        stopping = distributed.decided_on_rank_zero(run.stopping) if parallel else run.stopping
        if stopping:  # an epoch hook (a sweep's pruner) decided to stop
            break
        if not run.is_rank_zero:
            continue
        print(
            f"epoch {epoch + 1}/{epochs} - {record['epoch_wall_s']:.1f}s "
            f"(data wait {record['data_wait_s']:.1f}s) - loss {record['loss']:.4f} - val_loss "
            f"{scores['loss']:.4f} - val_accuracy {scores['accuracy']:.4f} - val_f1_macro "
            f"{scores['f1_macro']:.4f}",
            flush=True,
        )
    ledger.end()
    if parallel:
        run.set_tags(ddp.weights_agree(model))
    summary = ledger.summary()
    run.log_metrics(summary, step=0)
    # The caller also gets the last epoch's values (val_accuracy, ...), as from mltrack.keras.
    return returned, {**record, **summary}


def _epoch_record(
    ledger: Ledger, record: dict[str, float], samples: int, parallel: bool
) -> dict[str, float]:
    """The loop's ``record`` with the ledger's epoch figures; in a distributed job, the job's
    (``mltrack.tracking.distributed.merge_epoch``), which the ledger keeps for the summary."""
    record = {**record, **ledger.end_epoch(samples)}
    if not parallel:
        return record
    job = distributed.merge_epoch(record, samples, ledger)
    ledger.epochs[-1].update((key, job[key]) for key in ledger.epochs[-1] if key in job)
    return job
