"""Per-epoch timing and resource accounting (design.md §5).

What the timers include: ``wall`` is a monotonic clock (``perf_counter``) from the start of one
epoch to its end, so it contains the framework's own work at epoch end (validation, callbacks)
but not model export. CPU times come from ``getrusage(RUSAGE_SELF)``: user and system seconds of
every thread of this process (TF/torch worker threads included, data-loader subprocesses not).
Peak RSS is the process high-water mark so far (the kernel cannot reset it per epoch). A GPU
peak comes from a framework-provided callable that also resets the counter for the next epoch.

Epoch 0 is the warm-up (graph tracing, autotuning, caches) and is reported apart from the
steady-state mean of the other epochs.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Clock:
    wall: float
    user: float
    system: float

    @classmethod
    def now(cls) -> Clock:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(time.perf_counter(), usage.ru_utime, usage.ru_stime)

    def __sub__(self, other: Clock) -> Clock:
        return Clock(self.wall - other.wall, self.user - other.user, self.system - other.system)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@dataclass
class Ledger:
    gpu_peak_mb: Callable[[], float | None] | None = None
    epochs: list[dict[str, float]] = field(default_factory=list)
    _train_start: Clock | None = None
    _epoch_start: Clock | None = None
    _train_end: Clock | None = None

    def begin(self) -> None:
        self._train_start = Clock.now()

    def start_epoch(self) -> None:
        if self._train_start is None:
            self.begin()
        self._epoch_start = Clock.now()

    def end_epoch(self, samples: int | None) -> dict[str, float]:
        """Close the epoch and return its metrics, named as they are logged."""
        if self._epoch_start is None:
            raise RuntimeError("end_epoch() without start_epoch()")
        spent = Clock.now() - self._epoch_start
        self._epoch_start = None
        record = {
            "epoch_wall_s": spent.wall,
            "epoch_user_cpu_s": spent.user,
            "epoch_system_cpu_s": spent.system,
            "peak_rss_mb": peak_rss_mb(),
        }
        if samples:
            record["samples_per_s"] = samples / spent.wall if spent.wall > 0 else 0.0
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
            "epochs_completed": float(len(self.epochs)),
        }
        if self.epochs:
            out["warmup_epoch_wall_s"] = self.epochs[0]["epoch_wall_s"]
        steady = self.epochs[1:]
        if steady:
            out["steady_epoch_wall_s"] = statistics.fmean(e["epoch_wall_s"] for e in steady)
            rates = [e["samples_per_s"] for e in steady if "samples_per_s" in e]
            if rates:
                out["steady_samples_per_s"] = statistics.fmean(rates)
        return out
