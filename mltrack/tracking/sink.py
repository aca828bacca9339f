"""A run's journal thread: everything a run logs, on local disk within seconds, never waited for.

On sqlite one ``log_metric`` call costs about 2.8 ms, and a tracking server may be away for
minutes (design.md §8), so no caller of a run ever waits for the store, nor for the disk:
``put`` appends records (metric points, params, tags, artifact files) to a queue under a lock
and returns. One daemon thread appends what was queued to the run's journal (local disk,
fsync'd) every ``flush_interval_s``, or at once after ``kick()`` (the end of an epoch). The
writer process (``mltrack.tracking.writer``) delivers the journal to the store, in order.

A journal that cannot be written (a full disk) keeps its records in memory and tries again at
the next interval; ``error`` says why, so the run can end FAILED naming the folder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping

from mltrack.tracking.limits import MAX_METRICS_PER_BATCH, metric_key
from mltrack.tracking.records import Point, Record


class Sink:
    def __init__(
        self, journal: Callable[[list[Record]], None], *, flush_interval_s: float = 2.0
    ) -> None:
        self._journal = journal
        self._flush_interval_s = flush_interval_s
        self._cond = threading.Condition()
        self._incoming: list[Record] = []  # put, not yet journaled
        self._journaling = 0  # taken by the thread, not yet on disk
        self._kicked = False
        self._closed = False
        self._written = 0
        self._attempts = 0  # journal writes tried (a flush fails on one after it began)
        self._cpu_s = 0.0
        self.error = ""  # why the last journal write failed ("" once one succeeds)
        self._thread = threading.Thread(target=self._loop, name="mltrack-journal", daemon=True)
        self._thread.start()

    # -- producer side: cheap, never touches the disk -------------------------------------
    def put(self, records: Iterable[Record], *, kick: bool = False) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the run's journal is closed")
            self._incoming.extend(records)
            if kick or len(self._incoming) >= MAX_METRICS_PER_BATCH:
                self._kicked = True
                self._cond.notify_all()

    def log_many(
        self,
        metrics: Mapping[str, float],
        step: int,
        timestamp_ms: int | None = None,
        *,
        kick: bool = False,
    ) -> list[Point]:
        """Queue one point per metric at ``step``; returns them."""
        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        points = [Point(metric_key(k), float(v), int(step), ts) for k, v in metrics.items()]
        self.put(points, kick=kick)
        return points

    def kick(self) -> None:
        """Journal what is queued now rather than at the next interval."""
        with self._cond:
            self._kicked = True
            self._cond.notify_all()

    # -- state --------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records put but not yet on disk."""
        with self._cond:
            return len(self._incoming) + self._journaling

    @property
    def written(self) -> int:
        """Records journaled."""
        with self._cond:
            return self._written

    @property
    def writer_cpu_s(self) -> float:
        """CPU seconds the journal thread spent (its cost to the training process)."""
        with self._cond:
            return self._cpu_s

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything put so far is on disk; False if the timeout (or a disk that
        refuses the writes) came first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._kicked = True
            self._cond.notify_all()
            began = self._attempts
            while self._incoming or self._journaling:
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or (
                    self.error and self._attempts > began and not self._journaling
                ):
                    return False
                self._cond.wait(timeout=0.5 if remaining is None else min(remaining, 0.5))
            return True

    def close(self, timeout_s: float | None = None) -> bool:
        """Journal everything (at most ``timeout_s``), then stop. Is it all on disk?"""
        done = self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        return done

    # -- the thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._kicked and not self._closed:
                    self._cond.wait(timeout=self._flush_interval_s)
                self._kicked = False
                batch, self._incoming = self._incoming, []
                self._journaling = len(batch)
                if self._closed and (not batch or self.error):
                    self._incoming = batch + self._incoming
                    self._journaling = 0
                    self._cond.notify_all()
                    return
            start = time.thread_time()
            error = ""
            if batch:
                try:
                    self._journal(batch)
                except OSError as exc:  # kept in memory, tried again; the run reports it
                    error = f"{exc.strerror or exc}"
            with self._cond:
                if error:
                    self._incoming = batch + self._incoming
                else:
                    self._written += len(batch)
                self.error = error
                self._attempts += 1 if batch else 0
                self._journaling = 0
                self._cpu_s += time.thread_time() - start
                self._cond.notify_all()
