"""How far a run is from what the hardware can do: model FLOPs, the machine's peak, MFU.

- **FLOPs per training sample** (forward + backward), counted once per model, never per step:
  PyTorch with its own ``torch.utils.flop_counter.FlopCounterMode`` on two samples; Keras from
  the layers' shapes (dense, convolution, depthwise and separable convolution). Both count the
  matmul/convolution FLOPs (2 per multiply-add), as MFU is defined; the backward pass is the
  weight gradient of every weighted layer plus the input gradient of all but the first.
- **Peak TFLOP/s per dtype** (fp64, fp32, bf16, fp16) and the physical bound:
  ``mltrack.measure.peaks`` (a GEMM-shape sweep with the training framework's kernels on a CPU, the
  datasheet on an NVIDIA GPU). A CPU's 16-bit peaks are at least its fp32 peak (``bounded``): a
  framework may widen 16-bit math to fp32.
- Per epoch: ``achieved_tflops`` = FLOPs per sample × ``samples_per_s`` / 1e12, ``mfu`` =
  achieved / the peak of the run's compute dtype (at most 1), ``mfu_bound`` = achieved / the
  physical bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from mltrack.measure.environment import Hardware

DTYPES = ("fp64", "fp32", "bf16", "fp16")
# The name of each compute dtype in frameworks' spelling.
DTYPE_NAMES = {"float64": "fp64", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}

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


def peaks(
    hardware: Hardware, framework: str = "torch", shapes: Sequence[tuple[int, int, int]] = ()
) -> dict[str, float]:
    """Peak TFLOP/s by dtype of the device a run computes on: the first GPU's datasheet, else
    the CPU's measured with ``framework``'s kernels (``mltrack.measure.peaks.measured``),
    ``bounded``."""
    from mltrack.measure import peaks as measure

    if hardware.gpus:
        return gpu_peaks(hardware.gpus[0].name)
    return bounded(measure.measured(hardware, framework, shapes))


def bound_tags(hardware: Hardware) -> dict[str, str]:
    """``hw.bound_tflops.<dtype>``, the physical bound; or ``hw.bound_unavailable``: why not."""
    from mltrack.measure import peaks as measure

    found, why = measure.bounds(hardware)
    if not found:
        return {"hw.bound_unavailable": why}
    return {f"hw.bound_tflops.{k}": f"{v:.4g}" for k, v in found.items()}


def per_epoch(
    flops_per_sample: float | None,
    samples_per_s: float,
    peak_tflops: float | None,
    bound_tflops: float | None = None,
) -> dict[str, float]:
    """``achieved_tflops``; ``mfu`` against ``peak_tflops`` and ``mfu_bound`` against the
    physical bound. A peak below what was achieved is no peak: ``mfu`` is then 1 (the ledger
    raises the peak and says so), never above; a bound below it is no bound and is left out."""
    if not flops_per_sample:
        return {}
    achieved = flops_per_sample * samples_per_s / 1e12
    out = {"achieved_tflops": achieved}
    if peak_tflops:
        out["mfu"] = achieved / max(peak_tflops, achieved)
    if bound_tflops and bound_tflops >= max(peak_tflops or 0.0, achieved):
        out["mfu_bound"] = achieved / bound_tflops
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
