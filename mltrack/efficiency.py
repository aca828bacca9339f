"""How far a run is from what the hardware can do: model FLOPs, the machine's peak, MFU.

- **FLOPs per training sample** (forward + backward), counted once per model, never per step:
  PyTorch with its own ``torch.utils.flop_counter.FlopCounterMode`` on two samples; Keras from
  the layers' shapes (dense, convolution, depthwise and separable convolution). Both count the
  matmul/convolution FLOPs (2 per multiply-add), as MFU is defined; the backward pass is the
  weight gradient of every weighted layer plus the input gradient of all but the first.
- **Peak TFLOP/s per dtype** (fp64, fp32, bf16, fp16): on a CPU, measured once per hardware
  fingerprint by timing a large matmul per dtype in a fresh process (``calibrate``), cached
  in ``~/.cache/mltrack/peaks.json`` (``MLTRACK_CACHE_DIR``); on
  an NVIDIA GPU, the vendor's dense (not sparse) figure from its datasheet, ``GPU_PEAKS``. An
  unknown GPU has no peak: its MFU is absent, never guessed. A CPU's 16-bit peaks are at
  least its fp32 peak (``bounded``): a framework may widen 16-bit math to fp32.
- Per epoch: ``achieved_tflops`` = FLOPs per sample × ``samples_per_s`` / 1e12 and ``mfu`` =
  achieved / the peak of the run's compute dtype.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

from mltrack import cache
from mltrack.environment import Hardware

DTYPES = ("fp64", "fp32", "bf16", "fp16")
# The name of each compute dtype in frameworks' spelling.
DTYPE_NAMES = {"float64": "fp64", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
CALIBRATION_TIMEOUT_S = 300

# Dense peak TFLOP/s of NVIDIA data-centre GPUs by dtype, from the vendors' datasheets; 16-bit
# figures are tensor-core dense (the datasheets' starred sparse figures are twice these).
# fp32 is the non-tensor figure (TF32 is not what an fp32 run computes unless enabled).
GPU_PEAKS: dict[str, dict[str, float]] = {
    # NVIDIA H100 SXM datasheet, "H100 Tensor Core GPU" (2023): FP64 34, FP32 67, BF16/FP16 989.
    "H100": {"fp64": 34.0, "fp32": 67.0, "bf16": 989.0, "fp16": 989.0},
    # NVIDIA A100 datasheet (2021): FP64 9.7, FP32 19.5, BF16/FP16 tensor 312.
    "A100": {"fp64": 9.7, "fp32": 19.5, "bf16": 312.0, "fp16": 312.0},
    # NVIDIA L4 datasheet (2023): FP32 30.3, BF16/FP16 tensor 121 (242 with sparsity).
    "L4": {"fp32": 30.3, "bf16": 121.0, "fp16": 121.0},
    # NVIDIA V100 SXM2 datasheet (2020): FP64 7.8, FP32 15.7, FP16 tensor 125; no bf16.
    "V100": {"fp64": 7.8, "fp32": 15.7, "fp16": 125.0},
    # NVIDIA T4 datasheet (2019): FP32 8.1, FP16 tensor 65; no bf16.
    "T4": {"fp32": 8.1, "fp16": 65.0},
}


def gpu_peaks(name: str) -> dict[str, float]:
    """The datasheet peaks of a GPU by its NVML name, or {} for one not in the table."""
    words = name.replace("-", " ").upper().split()
    return next((dict(p) for model, p in GPU_PEAKS.items() if model in words), {})


def cpu_peaks(hardware: Hardware) -> dict[str, float]:
    """This CPU's measured peaks, from the cache or a calibration run now (a few seconds)."""
    cached = cache.lookup("peaks.json", hardware.fingerprint)
    if cached is not None:
        return dict(cached)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CALIBRATION],
            capture_output=True,
            text=True,
            timeout=CALIBRATION_TIMEOUT_S,
            check=True,
        )
        measured = {k: float(v) for k, v in json.loads(proc.stdout).items()}
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}  # no peak known: MFU stays absent
    cache.keep("peaks.json", hardware.fingerprint, measured)
    return measured


def bounded(measured: dict[str, float]) -> dict[str, float]:
    """A CPU's 16-bit peaks raised to at least its fp32 peak.

    The calibration times PyTorch's own kernels; another framework may run a 16-bit matmul
    otherwise: TensorFlow's CPU kernels widen float16 to float32 where PyTorch has only a slow
    reference kernel (measured here: a Keras mixed_fp16 MLP at 8-12× PyTorch's fp16 peak). A
    peak is an upper bound of what the machine can do in that dtype by any route, so MFU stays
    at most 1 in every framework.
    """
    out = dict(measured)
    for dtype in ("bf16", "fp16"):
        if dtype in out and "fp32" in out:
            out[dtype] = max(out[dtype], out["fp32"])
    return out


def peaks(hardware: Hardware) -> dict[str, float]:
    """Peak TFLOP/s by dtype of the device a run computes on (the first GPU, else the CPU)."""
    return gpu_peaks(hardware.gpus[0].name) if hardware.gpus else bounded(cpu_peaks(hardware))


def peak_tags(hardware: Hardware) -> dict[str, str]:
    return {f"hw.peak_tflops.{k}": f"{v:.4g}" for k, v in peaks(hardware).items()}


def per_epoch(
    flops_per_sample: float | None, samples_per_s: float, peak_tflops: float | None
) -> dict[str, float]:
    if not flops_per_sample:
        return {}
    achieved = flops_per_sample * samples_per_s / 1e12
    out = {"achieved_tflops": achieved}
    if peak_tflops:
        out["mfu"] = achieved / peak_tflops
    return out


# -- counting -------------------------------------------------------------------------------


def torch_flops_per_sample(model: Any, loss_fn: Any, x: Any, y: Any) -> float:
    """Forward + backward FLOPs of one training sample, by ``FlopCounterMode`` on ``x``.

    Runs in eval mode (BatchNorm statistics and dropout untouched) and clears the gradients it
    made; the counts of matmuls and convolutions do not depend on the mode.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            loss_fn(model(x).float(), y).backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return float(counter.get_total_flops()) / len(x)


def _layers(model: Any) -> Iterable[Any]:
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None):
            yield from _layers(layer)
        else:
            yield layer


def _forward_flops(layer: Any) -> float:
    kind = type(layer).__name__
    try:
        inputs, outputs = tuple(layer.input.shape[1:]), tuple(layer.output.shape[1:])
    except (AttributeError, ValueError):
        return 0.0
    if kind == "Dense":
        return 2.0 * math.prod(inputs) * layer.units
    if kind in ("Conv1D", "Conv2D", "Conv3D"):
        groups = getattr(layer, "groups", 1) or 1
        per_output = math.prod(layer.kernel_size) * inputs[-1] / groups
        return 2.0 * per_output * math.prod(outputs)
    if kind in ("DepthwiseConv1D", "DepthwiseConv2D"):
        return 2.0 * math.prod(layer.kernel_size) * math.prod(outputs)
    if kind in ("SeparableConv1D", "SeparableConv2D"):
        depthwise = math.prod(layer.kernel_size) * inputs[-1] * layer.depth_multiplier
        pointwise = inputs[-1] * layer.depth_multiplier * outputs[-1]
        return 2.0 * (depthwise + pointwise) * math.prod(outputs[:-1])
    return 0.0


def keras_flops_per_sample(model: Any) -> float:
    """Forward + backward FLOPs of one training sample of a built Keras model."""
    forward = [f for f in (_forward_flops(layer) for layer in _layers(model)) if f]
    if not forward:
        return 0.0
    # backward: every weight gradient, and every input gradient but the first layer's
    return sum(forward) * 3 - forward[0]


# -- calibration (the fresh process) -----------------------------------------------------------


def calibrate(max_size: int = 2048, repeats: int = 3, enough_s: float = 0.05) -> dict[str, float]:
    """Best-of-``repeats`` TFLOP/s of a square matmul per dtype, on every core.

    The matrix grows from 128 while one multiply takes under ``enough_s`` (up to
    ``max_size``): fast dtypes are measured on large matrices, slow ones (fp16 on a CPU
    without fp16 units runs a reference kernel, 100× slower) stop small and cost little.
    """
    import torch

    dtypes = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
    out = {}
    for name, dtype in zip(DTYPES, dtypes, strict=True):
        size = 128
        while True:
            a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
            torch.mm(a, b)  # warm-up (kernel selection, page faults)
            start = time.perf_counter()
            torch.mm(a, b)
            best = time.perf_counter() - start
            if best >= enough_s or size >= max_size:
                break
            size *= 2
        for _ in range(repeats - 1):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        out[name] = 2.0 * size**3 / best / 1e12
    return out


# A fresh process: no framework state of the caller's, every core its own.
CALIBRATION = (
    "import json; from mltrack.efficiency import calibrate; print(json.dumps(calibrate()))"
)
