"""The run's writer on its own: a fake store and journal, so ordering and timing are visible."""

from __future__ import annotations

import threading
import time

from mltrack.limits import MAX_METRICS_PER_BATCH
from mltrack.records import Artifact, Point, Record, Values
from mltrack.sink import Sink


class FakeStore:
    """A store that records the units it is sent and can be made slow or failing."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.units: list[list[Record]] = []
        self.delay_s = delay_s
        self.failing = threading.Event()

    def __call__(self, unit: list[Record]) -> None:
        time.sleep(self.delay_s)
        if self.failing.is_set():
            raise ConnectionError("store away")
        self.units.append(list(unit))

    @property
    def points(self) -> list[Point]:
        return [p for u in self.units for p in u if isinstance(p, Point)]


class FakeJournal:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def __call__(self, records: list[Record]) -> None:
        self.records.extend(records)


def test_points_arrive_batched_within_mlflow_limit():
    store = FakeStore()
    sink = Sink(store)
    for step in range(2500):
        sink.log("loss", float(step), step)
    assert sink.flush(timeout_s=10)
    assert [p.step for p in store.points] == list(range(2500))
    assert all(len(u) <= MAX_METRICS_PER_BATCH for u in store.units)
    assert len(store.units) < 2500 / 10  # batched, not one call per point
    assert sink.close()


def test_logging_does_not_wait_for_a_slow_store():
    store = FakeStore(delay_s=0.5)
    sink = Sink(store, flush_interval_s=0.01)
    sink.log("warm", 1.0, 0)
    time.sleep(0.05)  # the sender is now inside a slow call
    start = time.perf_counter()
    for step in range(1000):
        sink.log_many({"loss": 1.0, "acc": 0.5}, step)
    assert time.perf_counter() - start < 0.25
    assert sink.flush(timeout_s=10)
    assert len(store.points) == 2001
    sink.close()


def test_records_keep_their_order_across_kinds():
    store, journal = FakeStore(), FakeJournal()
    sink = Sink(store, journal=journal)
    sink.log("loss", 1.0, 0)
    sink.put([Values("tags", (("a", "1"),))])
    sink.log("loss", 0.5, 1)
    sink.put([Artifact("/x/model.json", "model")])
    assert sink.close(timeout_s=10)
    kinds = [type(u[0]).__name__ for u in store.units]
    assert kinds == ["Point", "Values", "Point", "Artifact"]
    assert [type(r).__name__ for r in journal.records] == kinds  # journaled in the same order


def test_everything_is_journaled_before_it_is_sent():
    store, journal = FakeStore(), FakeJournal()
    store.failing.set()
    sink = Sink(store, journal=journal, flush_interval_s=0.01, retry_interval_s=0.01)
    for step in range(10):
        sink.log("loss", float(step), step)
    sink.kick()
    time.sleep(0.2)
    assert [r.step for r in journal.records if isinstance(r, Point)] == list(range(10))
    assert not store.points and sink.pending == 10


def test_failing_store_keeps_records_and_delivers_each_once_when_back():
    store = FakeStore()
    store.failing.set()
    sink = Sink(store, flush_interval_s=0.01, retry_interval_s=0.01)
    for step in range(10):
        sink.log("loss", float(step), step)
    assert not sink.flush(timeout_s=0.3)
    assert sink.pending == 10
    store.failing.clear()
    assert sink.flush(timeout_s=5)
    assert sorted(p.step for p in store.points) == list(range(10))  # each exactly once
    assert sink.close()


def test_close_says_whether_everything_arrived_and_journals_it_all_anyway():
    store, journal = FakeStore(), FakeJournal()
    store.failing.set()
    sink = Sink(store, journal=journal, flush_interval_s=10, retry_interval_s=0.01)
    sink.log("loss", 1.0, 0)
    assert sink.close(timeout_s=0.2) is False
    assert [(r.key, r.step) for r in journal.records if isinstance(r, Point)] == [("loss", 0)]


def test_a_kick_delivers_without_waiting_for_the_interval():
    store = FakeStore()
    sink = Sink(store, flush_interval_s=30)
    sink.log_many({"loss": 1.0}, 0, kick=True)
    deadline = time.monotonic() + 2
    while not store.points and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.points, "a kicked point must not wait for the 30 s interval"
    sink.close()


def test_invalid_metric_names_are_cleaned():
    store = FakeStore()
    sink = Sink(store)
    sink.log("val loss (bf16)!", 1.0, 0)
    sink.close()
    assert store.points[0].key == "val loss _bf16__"
