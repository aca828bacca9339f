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

Efficiency (``mltrack.measure.efficiency``): given the model's FLOPs per training sample and the
peak of the run's compute dtype, each epoch adds ``achieved_tflops``, ``mfu`` (at most 1: an epoch
that beats the measured peak raises it, ``hw.peak_raised``) and ``mfu_bound`` (against the physical
bound, where the machine shows its clock: ``mltrack.measure.peaks``).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltrack.measure.efficiency import per_epoch
from mltrack.measure.environment import detect_hardware


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
    flops_per_sample: float | None = (
        None  # training (forward + backward), mltrack.measure.efficiency
    )
    peak_tflops: float | None = None  # of the run's compute dtype on this machine
    bound_tflops: float | None = None  # its physical bound (mltrack.measure.peaks), when known
    _raise: Callable[[float, int], None] | None = None  # measure_efficiency's peak raiser
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
            rate = record["samples_per_s"]
            found = per_epoch(self.flops_per_sample, rate, self.peak_tflops, self.bound_tflops)
            achieved = found.get("achieved_tflops", 0.0)
            if self.peak_tflops and achieved > self.peak_tflops and self._raise is not None:
                self._raise(achieved, len(self.epochs))
            record.update(found)
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
            for key in ("samples_per_s", "achieved_tflops", "mfu", "mfu_bound"):
                values = [e[key] for e in steady if key in e]
                if values:
                    out[f"steady_{key}"] = statistics.fmean(values)
        return out

    def measure_efficiency(
        self,
        flops_per_sample: float,
        compute_dtype: str,
        framework: str = "",
        tags: Callable[[dict[str, str]], None] | None = None,
        shapes: Sequence[tuple[int, int, int]] = (),
    ) -> dict[str, Any]:
        """Set the model's training FLOPs per sample and look up this machine's peak and
        physical bound for ``compute_dtype`` (framework spelling, e.g. ``bfloat16``), the peak
        measured with ``framework``'s kernels (``torch`` or ``tensorflow``; default: the one
        loaded) and the run's own matmul ``shapes`` (M, K, N) besides the standard ones.
        ``tags`` (the run's ``set_tags``) receives the peaks' tags now, and
        ``hw.peak_raised`` if an epoch beats the peak. Returns params to log."""
        from mltrack.measure import peaks as measure
        from mltrack.measure.efficiency import DTYPE_NAMES, peaks

        hardware = detect_hardware()
        framework = framework or ("torch" if "torch" in sys.modules else "tensorflow")
        dtype = DTYPE_NAMES.get(compute_dtype, compute_dtype)
        self.flops_per_sample = flops_per_sample or None
        found = peaks(hardware, framework, shapes)
        self.peak_tflops = found.get(dtype)
        bound, _ = measure.bounds(hardware)
        self.bound_tflops = bound.get(dtype)
        self._raise = lambda achieved, epoch: self._raised(
            hardware, framework, dtype, achieved, epoch, tags
        )
        if tags is not None:
            gpu = bool(hardware.gpus)
            tags(
                {
                    **{f"hw.peak_tflops.{k}": f"{v:.4g}" for k, v in found.items()},
                    "hw.peak_framework": "datasheet" if gpu else framework,
                    "hw.peak_method": "the GPU's datasheet" if gpu else measure.method(framework),
                }
            )
        return {"model.train_flops_per_sample": f"{flops_per_sample:.6g}", "compute_dtype": dtype}

    def _raised(
        self,
        hardware: Any,
        framework: str,
        dtype: str,
        achieved: float,
        epoch: int,
        tags: Callable[[dict[str, str]], None] | None,
    ) -> None:
        """An epoch beat the peak: it was no peak. Raise it (here, and in the cache for later
        runs on this CPU) to what was achieved, and say so; drop a bound below it."""
        from mltrack.measure import peaks as measure

        was = self.peak_tflops or 0.0
        self.peak_tflops = achieved
        if not hardware.gpus:
            measure.raise_peak(hardware, framework, dtype, achieved)
        note = {
            "hw.peak_raised": f"epoch {epoch}: achieved {achieved:.4g} TFLOP/s in {dtype}, above "
            f"the measured peak {was:.4g}: the peak is raised to it (a measured lower bound)"
        }
        if self.bound_tflops is not None and self.bound_tflops < achieved:
            self.bound_tflops = None
            note["hw.bound_unavailable"] = f"below the achieved {achieved:.4g} TFLOP/s"
        if tags is not None:
            tags(note)
