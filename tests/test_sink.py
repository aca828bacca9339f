from __future__ import annotations

import threading
import time

from mltrack.sink import MAX_METRICS_PER_BATCH, MetricSink, Point


class FakeStore:
    """A store that records batches and can be made slow or failing."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[Point]] = []
        self.delay_s = delay_s
        self.failing = threading.Event()

    def __call__(self, points: list[Point]) -> None:
        time.sleep(self.delay_s)
        if self.failing.is_set():
            raise ConnectionError("store away")
        self.batches.append(list(points))

    @property
    def points(self) -> list[Point]:
        return [p for b in self.batches for p in b]


def test_points_arrive_batched_within_mlflow_limit():
    store = FakeStore()
    sink = MetricSink(store)
    for step in range(2500):
        sink.log("loss", float(step), step)
    assert sink.flush(timeout_s=10)
    assert [p.step for p in store.points] == list(range(2500))
    assert all(len(b) <= MAX_METRICS_PER_BATCH for b in store.batches)
    assert len(store.batches) < 2500 / 10  # batched, not one call per point
    sink.close()


def test_logging_does_not_wait_for_a_slow_store():
    store = FakeStore(delay_s=0.5)
    sink = MetricSink(store, flush_interval_s=0.01)
    sink.log("warm", 1.0, 0)
    time.sleep(0.05)  # the writer is now inside a slow call
    start = time.perf_counter()
    for step in range(1000):
        sink.log_many({"loss": 1.0, "acc": 0.5}, step)
    assert time.perf_counter() - start < 0.25
    assert sink.flush(timeout_s=10)
    assert len(store.points) == 2001
    sink.close()


def test_failing_store_keeps_points_and_retries_each_once():
    store = FakeStore()
    store.failing.set()
    sink = MetricSink(store, flush_interval_s=0.01, retry_interval_s=0.01)
    for step in range(10):
        sink.log("loss", float(step), step)
    assert not sink.flush(timeout_s=0.3)
    assert sink.pending == 10
    store.failing.clear()
    assert sink.flush(timeout_s=5)
    assert sorted(p.step for p in store.points) == list(range(10))  # each exactly once
    assert sink.close() == []


def test_close_returns_what_could_not_be_written():
    store = FakeStore()
    store.failing.set()
    sink = MetricSink(store, flush_interval_s=0.01, retry_interval_s=0.01)
    sink.log("loss", 1.0, 0)
    left = sink.close(timeout_s=0.2)
    assert [(p.key, p.step) for p in left] == [("loss", 0)]


def test_invalid_metric_names_are_cleaned():
    store = FakeStore()
    sink = MetricSink(store)
    sink.log("val loss (bf16)!", 1.0, 0)
    sink.close()
    assert store.points[0].key == "val loss _bf16__"
