from __future__ import annotations

import time

import pytest

from mltrack.measure.ledger import Ledger


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_epochs_and_summary_separate_warmup_from_steady_state():
    ledger = Ledger()
    ledger.begin()
    for epoch, seconds in enumerate([0.12, 0.05, 0.05]):
        ledger.start_epoch()
        busy(seconds)
        record = ledger.end_epoch(samples=1000)
        assert record["epoch_wall_s"] == pytest.approx(seconds, abs=0.03)
        assert record["samples_per_s"] == pytest.approx(1000 / record["epoch_wall_s"])
        assert record["epoch_user_cpu_s"] > 0 and record["peak_rss_mb"] > 0, epoch
    ledger.end()
    summary = ledger.summary()
    assert summary["epochs_completed"] == 3
    assert summary["warmup_epoch_wall_s"] == pytest.approx(0.12, abs=0.03)
    assert summary["steady_epoch_wall_s"] == pytest.approx(0.05, abs=0.03)
    assert summary["total_wall_s"] >= 0.22
    assert summary["total_cpu_s"] == pytest.approx(
        summary["total_user_cpu_s"] + summary["total_system_cpu_s"]
    )


def test_gpu_peak_comes_from_the_framework_callable():
    ledger = Ledger(gpu_peak_mb=lambda: 123.0)
    ledger.start_epoch()
    assert ledger.end_epoch(None)["peak_gpu_mem_mb"] == 123.0


def test_end_epoch_without_start_is_an_error():
    with pytest.raises(RuntimeError):
        Ledger().end_epoch(1)


def test_one_timing_model_train_and_validation_apart_throughput_on_training_time():
    ledger = Ledger()
    ledger.start_epoch()
    busy(0.10)  # training steps
    ledger.start_validation()
    busy(0.05)  # validation pass
    ledger.end_validation()
    busy(0.02)  # callbacks at epoch end
    record = ledger.end_epoch(samples=1000)
    assert record["train_wall_s"] == pytest.approx(0.10, abs=0.02)
    assert record["val_wall_s"] == pytest.approx(0.05, abs=0.02)
    assert record["epoch_wall_s"] >= record["train_wall_s"] + record["val_wall_s"]
    assert record["samples_per_s"] == pytest.approx(1000 / record["train_wall_s"])
    ledger.start_epoch()  # without a validation pass the whole epoch trained
    busy(0.03)
    record = ledger.end_epoch(samples=10)
    assert record["val_wall_s"] == 0 and record["train_wall_s"] == pytest.approx(
        record["epoch_wall_s"], abs=1e-3
    )
    summary = ledger.summary()
    assert summary["total_val_wall_s"] == pytest.approx(0.05, abs=0.02)
    assert summary["total_train_wall_s"] == pytest.approx(0.13, abs=0.03)


def test_peak_memory_is_this_process_not_the_parent_it_was_forked_from():
    """``ru_maxrss`` keeps the pre-exec high-water mark of a large parent; VmHWM does not."""
    import subprocess
    import sys

    ballast = b"\x01" * (600 * 2**20)  # this process (the parent) holds 600 MiB, touched
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mltrack.measure.ledger import peak_rss_mb; print(peak_rss_mb())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    del ballast
    assert float(child.stdout) < 400, child.stdout  # a small process, whatever its parent
