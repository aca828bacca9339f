"""What the hardware can do per dtype: a measured peak and a physical bound (issue 31).

- **Measured peak** (``measured``): the "maximum achievable matmul FLOPS" method (AMD's and
  NVIDIA's practice of sweeping GEMM shapes rather than trusting one): matmuls of square and
  of the tall and skinny shapes training produces (``SHAPES``, and the run's own layer shapes
  when the caller knows them), timed with the kernels of the framework that trains
  (TensorFlow for Keras, PyTorch for PyTorch and the Trainer), on every core, best of three per
  shape, the best shape per dtype. It runs in a fresh process (no framework state of the
  caller's) once per hardware fingerprint and framework, cached in ``peaks.json``
  (``mltrack.cache``). A slow dtype (fp16 without fp16 units) stops after its first shape.
  On an NVIDIA GPU the datasheet's dense figure (``efficiency.GPU_PEAKS``) is the peak.
- **Physical bound** (``bounds``): cores × maximum clock × FLOPs a core can issue per cycle in
  that dtype, from the instruction set: two FMA pipes (the most any x86 core has, so this is an
  upper bound), each of 512 bits with AVX-512, 256 with AVX2, 128 with SSE2; a bfloat16 or fp16
  dot-product instruction (AVX512_BF16, AVX512_FP16) does twice the fp32 work of a lane; AMX
  tiles do 1,024 bf16 (or fp16, with AMX-FP16) FLOPs a cycle a core (Intel's figure for
  Sapphire Rapids). Without 16-bit units a framework widens 16-bit math to fp32: the fp32
  bound. The clock is ``cpuinfo_max_freq`` from sysfs; a machine that hides it (most virtual
  machines) gets no bound and a reason, never a guessed clock.
- MFU stays at most 1 by construction: ``mltrack.measure.ledger`` raises the cached peak to what a
  run achieved when a run beats it (a measured lower bound of the true peak), and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from mltrack import cache
from mltrack.measure.environment import Hardware, cpu_flags

DTYPES = ("fp64", "fp32", "bf16", "fp16")
CALIBRATION_TIMEOUT_S = 600
SLOW_S = 0.25  # a dtype whose first matmul takes longer has no fast kernel here: stop it
# (M, K, N): C = A(M×K) · B(K×N), 2·M·K·N FLOPs. Squares, then training's shapes: a dense
# layer's forward (batch × in · in × out) and weight gradient (in × batch · batch × out), the
# seed-003 MLP's own (3072 → 3000 → 1000, batch 128 and 256), and a convolution's im2col.
SHAPES: tuple[tuple[int, int, int], ...] = (
    (512, 512, 512),
    (1024, 1024, 1024),
    (2048, 2048, 2048),
    (256, 3072, 3000),
    (3072, 256, 3000),
    (256, 3000, 1000),
    (128, 3072, 3000),
    (4096, 576, 64),
    (1024, 4096, 1024),
)
FRAMEWORKS = ("torch", "tensorflow")


def _cache_key(hardware: Hardware, framework: str) -> str:
    return f"{hardware.fingerprint}/{framework}"


def measured(
    hardware: Hardware, framework: str, shapes: Sequence[tuple[int, int, int]] = ()
) -> dict[str, float]:
    """This CPU's measured peak TFLOP/s per dtype with ``framework``'s kernels (``torch`` or
    ``tensorflow``), from the cache, measuring only shapes not yet measured; {} when the
    calibration cannot run (the framework is not installed)."""
    cached = cache.lookup("peaks.json", _cache_key(hardware, framework)) or {}
    done = {tuple(s) for s in cached.get("shapes", [])}
    todo = [s for s in (*SHAPES, *shapes) if tuple(s) not in done]
    peaks = {k: float(v) for k, v in cached.get("peaks", {}).items()}
    if not todo:
        return peaks
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CALIBRATION, framework, json.dumps(todo)],
            capture_output=True,
            text=True,
            timeout=CALIBRATION_TIMEOUT_S,
            check=True,
            env=_all_cores(),
        )
        fresh = {k: float(v) for k, v in json.loads(proc.stdout.splitlines()[-1]).items()}
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return peaks
    peaks = {d: max(peaks.get(d, 0.0), fresh.get(d, 0.0)) for d in {*peaks, *fresh}}
    shapes_done = sorted(done | {tuple(s) for s in todo})
    cache.keep(
        "peaks.json", _cache_key(hardware, framework), {"peaks": peaks, "shapes": shapes_done}
    )
    return peaks


def raise_peak(hardware: Hardware, framework: str, dtype: str, achieved: float) -> None:
    """A run achieved more than the cached peak: keep what it achieved as the peak (a measured
    lower bound of the true one), so later runs on this hardware start from it."""
    key = _cache_key(hardware, framework)
    cached = cache.lookup("peaks.json", key) or {"peaks": {}, "shapes": []}
    if achieved > cached["peaks"].get(dtype, 0.0):
        cached["peaks"][dtype] = achieved
        cache.keep("peaks.json", key, cached)


def method(framework: str) -> str:
    """How ``measured`` measured, for the run's tags."""
    return (
        f"{framework} matmul sweep: {len(SHAPES)} shapes (square and training's) and the run's "
        "own, best of 3 each, all cores (the maximum achievable matmul FLOPS method)"
    )


def _all_cores() -> dict[str, str]:
    """The machine's peak uses every core: a launcher's one thread a rank is not the peak."""
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


# -- the physical bound ------------------------------------------------------------------------


def max_clock_mhz(cpu_root: Path = Path("/sys/devices/system/cpu")) -> float | None:
    """The highest ``cpuinfo_max_freq`` of the CPUs (MHz), or None when sysfs hides it."""
    found = []
    for path in cpu_root.glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        try:
            found.append(int(path.read_text().split()[0]) / 1000)  # kHz
        except (OSError, ValueError, IndexError):
            continue
    return max(found) if found else None


def flops_per_cycle(flags: Iterable[str]) -> dict[str, float]:
    """FLOPs one core can issue a cycle per dtype, from the CPU's instruction-set flags (two
    FMA pipes of the widest vectors; 16-bit units where present, else fp32's; see above)."""
    flags = set(flags)
    width = 512 if "avx512f" in flags else 256 if {"avx2", "fma"} <= flags else 128
    fp64 = 2 * 2 * width / 64  # pipes × (multiply + add) × lanes
    fp32 = 2 * fp64
    out = {"fp64": fp64, "fp32": fp32}
    out["bf16"] = 1024.0 if "amx_bf16" in flags else 2 * fp32 if "avx512_bf16" in flags else fp32
    out["fp16"] = 1024.0 if "amx_fp16" in flags else 2 * fp32 if "avx512_fp16" in flags else fp32
    return out


def cpu_bounds(
    flags: Iterable[str], cores: int, clock_mhz: float | None
) -> tuple[dict[str, float], str]:
    """TFLOP/s per dtype = cores × clock × ``flops_per_cycle``; ({}, why) without a clock."""
    if not clock_mhz:
        return {}, (
            "the CPU's maximum clock is not readable (no cpufreq in /sys: a virtual machine "
            "hides it), so no physical bound"
        )
    per_cycle = flops_per_cycle(flags)
    return {d: cores * clock_mhz * 1e6 * f / 1e12 for d, f in per_cycle.items()}, ""


def bounds(hardware: Hardware) -> tuple[dict[str, float], str]:
    """The physical bound per dtype of the device a run computes on, and why there is none."""
    from mltrack.measure.efficiency import gpu_peaks

    if hardware.gpus:
        found = gpu_peaks(hardware.gpus[0].name)
        return found, "" if found else f"{hardware.gpus[0].name} is not in the datasheet table"
    import psutil

    cores = psutil.cpu_count(logical=False) or hardware.cpu_cores
    return cpu_bounds(cpu_flags(), cores, max_clock_mhz())


# -- calibration (the fresh process) -------------------------------------------------------------


Operands = tuple[Any, Any]


def _timer(framework: str, dtype: str) -> tuple[Callable[[int, int, int], Operands], Callable]:
    """(make(M, K, N) -> operands, multiply(operands)) with ``framework``'s kernels."""
    if framework == "torch":
        import torch

        torch_dtype = {
            "fp64": torch.float64, "fp32": torch.float32,
            "bf16": torch.bfloat16, "fp16": torch.float16,
        }[dtype]  # fmt: skip

        def make_torch(m: int, k: int, n: int) -> Operands:
            return torch.randn(m, k).to(torch_dtype), torch.randn(k, n).to(torch_dtype)

        return make_torch, lambda ab: torch.mm(*ab)
    import tensorflow as tf

    tf_dtype = {"fp64": tf.float64, "fp32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}

    def make_tf(m: int, k: int, n: int) -> Operands:
        a, b = tf.random.normal((m, k)), tf.random.normal((k, n))
        return tf.cast(a, tf_dtype[dtype]), tf.cast(b, tf_dtype[dtype])

    def multiply_tf(ab: Operands) -> None:
        product = tf.linalg.matmul(*ab)
        product[0, 0].numpy()  # eager CPU ops are synchronous; the read makes sure

    return make_tf, multiply_tf


def calibrate(
    framework: str, shapes: Sequence[tuple[int, int, int]] = SHAPES, repeats: int = 3
) -> dict[str, float]:
    """Best TFLOP/s per dtype over ``shapes`` with ``framework``'s matmul, best of ``repeats``."""
    out: dict[str, float] = {}
    for dtype in DTYPES:
        make, multiply = _timer(framework, dtype)
        for m, k, n in shapes:
            operands = make(m, k, n)
            multiply(operands)  # warm-up: kernel choice, page faults
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                multiply(operands)
                best = min(best, time.perf_counter() - start)
            out[dtype] = max(out.get(dtype, 0.0), 2.0 * m * k * n / best / 1e12)
            if best > SLOW_S:  # no fast kernel for this dtype: the larger shapes would crawl
                break
    return out


CALIBRATION = (
    "import json, sys; from mltrack.measure.peaks import calibrate; "
    "print(json.dumps(calibrate(sys.argv[1], [tuple(s) for s in json.loads(sys.argv[2])])))"
)
