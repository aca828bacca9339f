"""Peaks are upper bounds: MFU cannot exceed 1 whichever framework computes a dtype."""

from __future__ import annotations

from mltrack.measure.efficiency import bounded, per_epoch


def test_a_cpu_16_bit_peak_is_at_least_its_fp32_peak():
    # A CPU without fp16 units: PyTorch's reference kernel is 50x below fp32 (measured on an
    # AMD EPYC), while TensorFlow widens fp16 to fp32 and runs near the fp32 peak.
    measured = {"fp64": 0.052, "fp32": 0.138, "bf16": 0.36, "fp16": 0.0028}
    peaks = bounded(measured)
    assert peaks == {"fp64": 0.052, "fp32": 0.138, "bf16": 0.36, "fp16": 0.138}
    assert measured["fp16"] == 0.0028  # the caller's dict is not changed
    # A Keras mixed_fp16 epoch at fp32 speed is now at most 100% of the machine.
    assert per_epoch(1.2e8, 1000.0, peaks["fp16"])["mfu"] <= 1.0
