"""Peaks that are peaks (issue 31): the physical bound from the instruction set and the clock,
MFU at most 1 by construction, a peak a run beats raised and said so."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest

from mltrack import cache
from mltrack.measure import peaks
from mltrack.measure.efficiency import per_epoch
from mltrack.measure.environment import Hardware
from mltrack.measure.ledger import Ledger

AVX512 = {"fma", "avx2", "avx512f"}
CPU = Hardware("Test CPU", 2, True, False)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"sse2"}, {"fp64": 8, "fp32": 16, "bf16": 16, "fp16": 16}),
        ({"fma", "avx2"}, {"fp64": 16, "fp32": 32, "bf16": 32, "fp16": 32}),
        (AVX512, {"fp64": 32, "fp32": 64, "bf16": 64, "fp16": 64}),
        (AVX512 | {"avx512_bf16"}, {"fp64": 32, "fp32": 64, "bf16": 128, "fp16": 64}),
        (AVX512 | {"avx512_bf16", "avx512_fp16", "amx_bf16"},
         {"fp64": 32, "fp32": 64, "bf16": 1024, "fp16": 128}),
        (AVX512 | {"amx_bf16", "amx_fp16"}, {"fp64": 32, "fp32": 64, "bf16": 1024, "fp16": 1024}),
    ],
)  # fmt: skip
def test_flops_a_core_issues_a_cycle_follow_the_instruction_set(flags, expected):
    assert peaks.flops_per_cycle(flags) == expected


def test_the_bound_is_cores_times_clock_times_flops_per_cycle():
    found, why = peaks.cpu_bounds(AVX512 | {"avx512_bf16"}, cores=2, clock_mhz=3000.0)
    assert why == ""
    assert found["fp32"] == pytest.approx(2 * 3.0e9 * 64 / 1e12)  # 0.384 TFLOP/s
    assert found["bf16"] == pytest.approx(2 * found["fp32"])


def test_no_clock_no_bound_and_the_reason(tmp_path):
    assert peaks.max_clock_mhz(tmp_path) is None  # no cpufreq: a virtual machine hides it
    found, why = peaks.cpu_bounds(AVX512, cores=2, clock_mhz=None)
    assert found == {} and "maximum clock is not readable" in why


def test_the_clock_is_the_highest_cpuinfo_max_freq(tmp_path):
    for cpu, khz in (("cpu0", "3500000"), ("cpu1", "3700000"), ("cpu2", "garbage")):
        folder = tmp_path / cpu / "cpufreq"
        folder.mkdir(parents=True)
        (folder / "cpuinfo_max_freq").write_text(khz + "\n")
    assert peaks.max_clock_mhz(tmp_path) == 3700.0


def test_mfu_is_at_most_one_and_a_bound_below_what_ran_is_left_out():
    assert per_epoch(1e9, 1000.0, 2.0, 4.0) == {
        "achieved_tflops": 1.0,
        "mfu": 0.5,
        "mfu_bound": 0.25,
    }
    beaten = per_epoch(1e9, 1000.0, 0.5, 0.8)
    assert beaten["mfu"] == 1.0 and "mfu_bound" not in beaten
    assert per_epoch(1e9, 1000.0, None, None) == {"achieved_tflops": 1.0}


def test_an_epoch_that_beats_the_peak_raises_it_here_and_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTRACK_CACHE_DIR", str(tmp_path))
    key = f"{CPU.fingerprint}/tensorflow"
    cache.keep("peaks.json", key, {"peaks": {"fp32": 0.2}, "shapes": list(peaks.SHAPES)})
    monkeypatch.setattr("mltrack.measure.ledger.detect_hardware", lambda: CPU)
    monkeypatch.setattr(peaks, "bounds", lambda hardware: ({"fp32": 0.3}, ""))
    tags: dict[str, str] = {}
    ledger = Ledger()
    ledger.measure_efficiency(1e9, "float32", "tensorflow", tags.update)
    assert (ledger.peak_tflops, tags["hw.peak_tflops.fp32"]) == (0.2, "0.2")
    assert tags["hw.peak_framework"] == "tensorflow" and "matmul sweep" in tags["hw.peak_method"]
    ledger.start_epoch()
    ledger.end_epoch(None)  # an epoch without samples: no rate, nothing raised
    assert "hw.peak_raised" not in tags
    ledger.start_epoch()
    assert ledger._epoch_start is not None
    # An epoch whose training steps took one second ...
    ledger._epoch_start = dataclasses.replace(ledger._epoch_start, wall=time.perf_counter() - 1)
    ledger.start_validation()
    record = ledger.end_epoch(400)  # ... at 400 samples/s x 1 GFLOP: 0.4 TFLOP/s
    assert record["mfu"] == 1.0 and "mfu_bound" not in record  # the 0.3 bound was no bound
    assert re.match(r"epoch 1: achieved 0\.(39|4)", tags["hw.peak_raised"])
    assert "hw.bound_unavailable" in tags
    assert cache.lookup("peaks.json", key)["peaks"]["fp32"] == pytest.approx(0.4, rel=0.01)
