"""One precision vocabulary for every framework, command line, sweep and report (design.md §4).

``fp64``/``fp32``/``fp16``/``bf16`` put compute *and* variables in that type. ``mixed_fp16`` and
``mixed_bf16`` compute in 16 bits and keep variables in fp32 (fp16 adds loss scaling). ``auto``
picks one from the hardware and the choice is logged with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mltrack.measure.environment import Hardware

CONCRETE = ("fp64", "fp32", "fp16", "bf16", "mixed_fp16", "mixed_bf16")
PRECISIONS = (*CONCRETE, "auto")

# Keras 3 dtype-policy names.
KERAS_POLICY = {
    "fp64": "float64",
    "fp32": "float32",
    "fp16": "float16",
    "bf16": "bfloat16",
    "mixed_fp16": "mixed_float16",
    "mixed_bf16": "mixed_bfloat16",
}

# The dtype variables are stored in.
VARIABLE_DTYPE = {
    "fp64": "float64",
    "fp32": "float32",
    "fp16": "float16",
    "bf16": "bfloat16",
    "mixed_fp16": "float32",
    "mixed_bf16": "float32",
}

# The dtype arithmetic happens in.
COMPUTE_DTYPE = {
    "fp64": "float64",
    "fp32": "float32",
    "fp16": "float16",
    "bf16": "bfloat16",
    "mixed_fp16": "float16",
    "mixed_bf16": "bfloat16",
}


def is_mixed(precision: str) -> bool:
    return precision.startswith("mixed_")


def output_dtype(precision: str) -> str:
    """The dtype of a model's final activation.

    Under a mixed policy the softmax/sigmoid runs in float32 for numeric stability (the Keras
    mixed-precision guide, seed 003); under a pure policy every layer is in that type (seed 002).
    """
    return "float32" if is_mixed(precision) else COMPUTE_DTYPE[precision]


@dataclass(frozen=True)
class Resolved:
    requested: str
    resolved: str
    reason: str


def resolve(requested: str, hardware: Hardware) -> Resolved:
    """Turn ``auto`` into a concrete precision for this hardware; pass others through."""
    if requested != "auto":
        return Resolved(requested, requested, "requested")
    for gpu in hardware.gpus:
        if gpu.compute_capability >= (8, 0):
            return Resolved("auto", "mixed_bf16", f"{gpu.name}: bf16 tensor cores (sm_80+)")
        if gpu.compute_capability >= (7, 0):
            return Resolved("auto", "mixed_fp16", f"{gpu.name}: fp16 tensor cores (sm_70+)")
    if hardware.amx_bf16:
        return Resolved("auto", "mixed_bf16", "CPU has AMX bf16")
    if hardware.avx512_bf16:
        return Resolved("auto", "mixed_bf16", "CPU has AVX-512 bf16 instructions")
    return Resolved("auto", "fp32", "no bf16/fp16 acceleration found")
