"""Per-epoch timing and resource accounting (design.md §5): one timing model for every framework.

What the timers include, per epoch, on a monotonic clock (``perf_counter``), identical for
Keras (``mltrack.keras``) and PyTorch (``mltrack.torch``):

- ``train_wall_s``: the training steps only, from the epoch's start to the start of its
  validation pass (or to its end, without one);
- ``val_wall_s``: the validation pass;
- ``epoch_wall_s``: the whole epoch: both, plus the framework's callbacks at epoch end;
- ``samples_per_s``: training samples / ``train_wall_s``.

Model export is in none of them (``export_wall_s`` is its own metric). The summary adds
``total_train_wall_s``, ``total_val_wall_s`` and ``steady_samples_per_s`` (the mean over the
epochs after the first). CPU times come from ``getrusage(RUSAGE_SELF)``: user and system seconds of
every thread of this process (TF/torch worker threads included, data-loader subprocesses not).
Peak RSS is the process high-water mark so far (the kernel cannot reset it per epoch). A GPU
peak comes from a framework-provided callable that also resets the counter for the next epoch.

Epoch 0 is the warm-up (graph tracing, autotuning, caches) and is reported apart from the
steady-state mean of the other epochs.

Efficiency (``mltrack.efficiency``): given the model's FLOPs per training sample and the peak of
the run's compute dtype, each epoch adds ``achieved_tflops`` and ``mfu``.

Noise: shared machines are noisy, so each epoch also says what else the machine did, from
``/proc/stat``: ``cpu_steal_s`` (CPU time the hypervisor gave to other guests) and
``other_cpu_s`` (CPU seconds the machine's other processes used: the machine's busy time minus
this process's and its children's). The summary adds their totals; ``mltrack compare`` flags
runs that lost more than 10% of their CPU capacity to them.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltrack.efficiency import per_epoch
from mltrack.environment import detect_hardware


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the whole machine was busy, and stolen from it, since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0, 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


@dataclass(frozen=True)
class Clock:
    wall: float
    user: float
    system: float
    children: float = 0.0  # user + system of reaped child processes (data-loader workers)
    machine_busy: float = 0.0
    steal: float = 0.0

    @classmethod
    def now(cls) -> Clock:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy, steal = machine_cpu()
        return cls(
            time.perf_counter(),
            usage.ru_utime,
            usage.ru_stime,
            kids.ru_utime + kids.ru_stime,
            busy,
            steal,
        )

    def __sub__(self, other: Clock) -> Clock:
        return Clock(
            *(
                a - b
                for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
            )
        )

    @property
    def other_cpu(self) -> float:
        """CPU seconds other processes used (for a difference of two clocks)."""
        return max(0.0, self.machine_busy - self.user - self.system - self.children)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB. On Linux ``VmHWM``: ``ru_maxrss`` keeps the
    high-water mark of the process this one was forked from, before its exec (a run started
    by a large parent, a test runner or a notebook, reported the parent's size)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@dataclass
class Ledger:
    gpu_peak_mb: Callable[[], float | None] | None = None
    flops_per_sample: float | None = None  # training (forward + backward), mltrack.efficiency
    peak_tflops: float | None = None  # of the run's compute dtype on this machine
    epochs: list[dict[str, float]] = field(default_factory=list)
    _train_start: Clock | None = None
    _epoch_start: Clock | None = None
    _train_end: Clock | None = None
    _steps_end: float | None = None  # the epoch's training steps ended (validation began)
    _val_start: float | None = None
    _val_wall: float = 0.0

    def begin(self) -> None:
        self._train_start = Clock.now()

    def start_epoch(self) -> None:
        if self._train_start is None:
            self.begin()
        self._epoch_start = Clock.now()
        self._steps_end = self._val_start = None
        self._val_wall = 0.0

    def start_validation(self) -> None:
        """The epoch's training steps are over; its validation pass begins."""
        now = time.perf_counter()
        if self._steps_end is None:
            self._steps_end = now
        self._val_start = now

    def end_validation(self) -> None:
        if self._val_start is not None:
            self._val_wall += time.perf_counter() - self._val_start
            self._val_start = None

    def end_epoch(self, samples: int | None) -> dict[str, float]:
        """Close the epoch and return its metrics, named as they are logged."""
        if self._epoch_start is None:
            raise RuntimeError("end_epoch() without start_epoch()")
        now = Clock.now()
        spent = now - self._epoch_start
        train = (self._steps_end or now.wall) - self._epoch_start.wall
        self._epoch_start = None
        record = {
            "epoch_wall_s": spent.wall,
            "train_wall_s": train,
            "val_wall_s": self._val_wall,
            "epoch_user_cpu_s": spent.user,
            "epoch_system_cpu_s": spent.system,
            "cpu_steal_s": spent.steal,
            "other_cpu_s": spent.other_cpu,
            "peak_rss_mb": peak_rss_mb(),
        }
        if samples:
            record["samples_per_s"] = samples / train if train > 0 else 0.0
            record.update(
                per_epoch(self.flops_per_sample, record["samples_per_s"], self.peak_tflops)
            )
        if self.gpu_peak_mb is not None and (gpu := self.gpu_peak_mb()) is not None:
            record["peak_gpu_mem_mb"] = gpu
        self.epochs.append(record)
        return record

    def end(self) -> None:
        self._train_end = Clock.now()

    def summary(self) -> dict[str, float]:
        """Totals for the whole training (the seed-000 table) and warm-up vs steady state."""
        if self._train_start is None:
            return {}
        total = (self._train_end or Clock.now()) - self._train_start
        out = {
            "total_wall_s": total.wall,
            "total_user_cpu_s": total.user,
            "total_system_cpu_s": total.system,
            "total_cpu_s": total.user + total.system,
            "total_train_wall_s": sum(e["train_wall_s"] for e in self.epochs),
            "total_val_wall_s": sum(e["val_wall_s"] for e in self.epochs),
            "total_cpu_steal_s": sum(e["cpu_steal_s"] for e in self.epochs),
            "total_other_cpu_s": sum(e["other_cpu_s"] for e in self.epochs),
            "epochs_completed": float(len(self.epochs)),
        }
        if self.epochs:
            out["warmup_epoch_wall_s"] = self.epochs[0]["epoch_wall_s"]
        steady = self.epochs[1:]
        if steady:
            out["steady_epoch_wall_s"] = statistics.fmean(e["epoch_wall_s"] for e in steady)
            for key in ("samples_per_s", "achieved_tflops", "mfu"):
                values = [e[key] for e in steady if key in e]
                if values:
                    out[f"steady_{key}"] = statistics.fmean(values)
        return out

    def measure_efficiency(self, flops_per_sample: float, compute_dtype: str) -> dict[str, Any]:
        """Set the model's training FLOPs per sample and look up this machine's peak for
        ``compute_dtype`` (framework spelling, e.g. ``bfloat16``); returns params to log."""
        from mltrack.efficiency import DTYPE_NAMES, peaks

        self.flops_per_sample = flops_per_sample or None
        dtype = DTYPE_NAMES.get(compute_dtype, compute_dtype)
        self.peak_tflops = peaks(detect_hardware()).get(dtype)
        return {"model.train_flops_per_sample": f"{flops_per_sample:.6g}", "compute_dtype": dtype}
