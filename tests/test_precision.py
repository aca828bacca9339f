from __future__ import annotations

import pytest

from mltrack.measure.environment import Gpu, Hardware
from mltrack.measure.precision import CONCRETE, KERAS_POLICY, output_dtype, resolve

CPU = Hardware("Some CPU", 2, avx512_bf16=False, amx_bf16=False)


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        (CPU, "fp32"),
        (Hardware("Xeon", 2, avx512_bf16=True, amx_bf16=False), "mixed_bf16"),
        (Hardware("Xeon", 2, avx512_bf16=True, amx_bf16=True), "mixed_bf16"),
        (Hardware("x", 8, False, False, (Gpu("Tesla T4", 15360, (7, 5)),)), "mixed_fp16"),
        (Hardware("x", 8, False, False, (Gpu("NVIDIA H100", 81559, (9, 0)),)), "mixed_bf16"),
        (Hardware("x", 8, False, False, (Gpu("GTX 970", 4096, (5, 2)),)), "fp32"),
    ],
)
def test_auto_resolves_from_hardware_with_a_reason(hardware, expected):
    resolved = resolve("auto", hardware)
    assert resolved.resolved == expected
    assert resolved.requested == "auto" and resolved.reason


def test_explicit_precision_passes_through():
    assert resolve("fp16", CPU).resolved == "fp16"


def test_every_concrete_precision_has_a_keras_policy_and_output_dtype():
    assert set(KERAS_POLICY) == set(CONCRETE)
    assert output_dtype("mixed_fp16") == "float32"
    assert output_dtype("mixed_bf16") == "float32"
    assert output_dtype("fp16") == "float16"  # seed 002: every layer in that type
    assert output_dtype("fp64") == "float64"
