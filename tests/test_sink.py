"""The run's journal thread on its own: a fake journal, so ordering and timing are visible."""

from __future__ import annotations

import threading
import time

from mltrack.tracking.records import Artifact, Point, Record, Values
from mltrack.tracking.sink import Sink


class FakeJournal:
    """A journal that records what it is given and can be made slow or full."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.records: list[Record] = []
        self.delay_s = delay_s
        self.full = threading.Event()

    def __call__(self, records: list[Record]) -> None:
        time.sleep(self.delay_s)
        if self.full.is_set():
            raise OSError(28, "No space left on device")
        self.records.extend(records)

    @property
    def points(self) -> list[Point]:
        return [p for p in self.records if isinstance(p, Point)]


def test_logging_does_not_wait_for_a_slow_disk():
    journal = FakeJournal(delay_s=0.5)
    sink = Sink(journal, flush_interval_s=0.01)
    sink.log_many({"warm": 1.0}, 0)
    time.sleep(0.05)  # the thread is now inside a slow append
    start = time.perf_counter()
    for step in range(1000):
        sink.log_many({"loss": 1.0, "acc": 0.5}, step)
    assert time.perf_counter() - start < 0.25
    assert sink.flush(timeout_s=10)
    assert len(journal.points) == 2001
    sink.close()


def test_records_keep_their_order_across_kinds():
    journal = FakeJournal()
    sink = Sink(journal)
    sink.log_many({"loss": 1.0}, 0)
    sink.put([Values("tags", (("a", "1"),))])
    sink.log_many({"loss": 0.5}, 1)
    sink.put([Artifact("/x/model.json", "model")])
    assert sink.close(timeout_s=10)
    assert [type(r).__name__ for r in journal.records] == ["Point", "Values", "Point", "Artifact"]


def test_a_full_disk_keeps_the_records_in_memory_says_why_and_writes_them_when_it_frees():
    journal = FakeJournal()
    journal.full.set()
    sink = Sink(journal, flush_interval_s=0.01)
    for step in range(10):
        sink.log_many({"loss": float(step)}, step)
    assert not sink.flush(timeout_s=0.5)
    assert "No space left" in sink.error and sink.pending == 10 and not journal.records
    journal.full.clear()
    assert sink.flush(timeout_s=5)
    assert [p.step for p in journal.points] == list(range(10)) and sink.error == ""
    assert sink.close()


def test_close_says_whether_everything_reached_the_disk():
    journal = FakeJournal()
    journal.full.set()
    sink = Sink(journal, flush_interval_s=10)
    sink.log_many({"loss": 1.0}, 0)
    assert sink.close(timeout_s=0.2) is False


def test_a_kick_journals_without_waiting_for_the_interval():
    journal = FakeJournal()
    sink = Sink(journal, flush_interval_s=30)
    sink.log_many({"loss": 1.0}, 0, kick=True)
    deadline = time.monotonic() + 2
    while not journal.points and time.monotonic() < deadline:
        time.sleep(0.01)
    assert journal.points, "a kicked point must not wait for the 30 s interval"
    sink.close()


def test_invalid_metric_names_are_cleaned():
    journal = FakeJournal()
    sink = Sink(journal)
    sink.log_many({"val loss (bf16)!": 1.0}, 0)
    sink.close()
    assert journal.points[0].key == "val loss _bf16__"
