"""A run's writer: everything a run logs, journaled to local disk, then delivered in order.

On sqlite one ``log_metric`` call costs about 2.8 ms while ``log_batch`` of 1000 points runs at
about 10,700 points/s (design.md §8), and a tracking server may be away for minutes, with
MLflow's client retrying a single request for up to four minutes by default. So no caller ever
waits for the store: ``put`` appends records (metric points, params, tags, artifact files) to a
queue under a lock and returns. Two daemon threads do the rest:

- the **journal** thread appends what was queued to the run's journal (local disk, fsync'd)
  every ``flush_interval_s``, or at once after ``kick()`` (the end of an epoch);
- the **sender** thread delivers journaled records to the store in the order they were put:
  consecutive metric points as one ``log_batch`` of up to 1000, params and tags as one record,
  artifacts one file at a time. A failed delivery is retried with back-off, warned about once,
  and never reordered or dropped.

So a record is on disk within ``flush_interval_s`` of being logged whatever the store does, and
in the store as soon as the store takes it. ``flush`` waits for delivery; ``close`` journals
everything, waits for delivery at most ``timeout_s`` and says whether it all arrived: what did
not is in the journal for ``mltrack sync``. The sender also calls ``heartbeat`` every
``heartbeat_interval_s`` (a run touches a tag, so ``mltrack doctor`` can tell it is alive).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from mltrack.limits import MAX_METRICS_PER_BATCH, metric_key
from mltrack.records import Point, Record, next_unit

log = logging.getLogger(__name__)


class Sink:
    def __init__(
        self,
        deliver: Callable[[list[Record]], None],
        *,
        journal: Callable[[list[Record]], None] | None = None,
        flush_interval_s: float = 2.0,
        retry_interval_s: float = 1.0,
        max_retry_interval_s: float = 30.0,
        heartbeat: Callable[[], None] | None = None,
        heartbeat_interval_s: float = 30.0,
        refusal: Callable[[Exception], str] | None = None,
    ) -> None:
        self._deliver = deliver
        self._refusal = refusal
        self._journal = journal
        self._flush_interval_s = flush_interval_s
        self._retry_interval_s = retry_interval_s
        self._max_retry_interval_s = max_retry_interval_s
        self._heartbeat = heartbeat
        self._heartbeat_interval_s = heartbeat_interval_s
        self._last_beat = time.monotonic()
        self._cond = threading.Condition()
        self._incoming: list[Record] = []  # put, not yet journaled
        self._journaling = 0  # taken by the journal thread, not yet handed on
        self._outgoing: list[Record] = []  # journaled, not yet delivered (head may be in flight)
        self._kicked = False
        self._closed = False
        self._failing = False
        self._refused = ""
        self._written = 0
        self._cpu_s = 0.0
        self._threads = [
            threading.Thread(target=self._journal_loop, name="mltrack-journal", daemon=True),
            threading.Thread(target=self._send_loop, name="mltrack-sender", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- producer side: cheap, never touches disk or store --------------------------------
    def put(self, records: Iterable[Record], *, kick: bool = False) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the run's writer is closed")
            self._incoming.extend(records)
            if kick or len(self._incoming) >= MAX_METRICS_PER_BATCH:
                self._kicked = True
                self._cond.notify_all()

    def log(self, key: str, value: float, step: int, timestamp_ms: int | None = None) -> None:
        self.log_many({key: value}, step, timestamp_ms)

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
        """Journal and send what is queued now rather than at the next interval."""
        with self._cond:
            self._kicked = True
            self._cond.notify_all()

    # -- state --------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records put but not yet delivered."""
        with self._cond:
            return len(self._incoming) + self._journaling + len(self._outgoing)

    @property
    def refused(self) -> str:
        """Why the store refuses these records for good ("" unless it does): the sender then
        stops, ``flush`` and ``close`` return False at once, and the journal keeps them."""
        with self._cond:
            return self._refused

    @property
    def written(self) -> int:
        """Records delivered (each metric point counts one)."""
        with self._cond:
            return self._written

    @property
    def writer_cpu_s(self) -> float:
        """CPU seconds the journal and sender threads spent (the writer's own cost)."""
        with self._cond:
            return self._cpu_s

    def _wait(self, done: Callable[[], bool], timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._kicked = True
            self._cond.notify_all()
            while not done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(timeout=0.5 if remaining is None else min(remaining, 0.5))
            return True

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything put so far is delivered; False if the timeout came first."""
        if not self._wait(
            lambda: (
                bool(self._refused) or not (self._incoming or self._journaling or self._outgoing)
            ),
            timeout_s,
        ):
            return False
        with self._cond:
            return not self._refused

    def close(self, timeout_s: float | None = None) -> bool:
        """Journal everything, wait at most ``timeout_s`` for delivery, stop. All delivered?"""
        self._wait(lambda: not (self._incoming or self._journaling), None)  # local disk only
        delivered = self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._threads[0].join(timeout=5)
        if delivered:
            self._threads[1].join(timeout=5)
        # Otherwise the sender may be inside a request MLflow retries for minutes: it is a
        # daemon, and what it holds is in the journal.
        return delivered

    # -- the two threads ------------------------------------------------------------------------
    def _journal_loop(self) -> None:
        while True:
            with self._cond:
                if not self._kicked and not self._closed:
                    self._cond.wait(timeout=self._flush_interval_s)
                self._kicked = False
                batch, self._incoming = self._incoming, []
                self._journaling = len(batch)
                if self._closed and not batch:
                    return
            start = time.thread_time()
            if batch and self._journal is not None:
                try:
                    self._journal(batch)
                except Exception as exc:  # the store may still take them; say what is at risk
                    log.error("could not journal %d record(s) to local disk: %s", len(batch), exc)
            with self._cond:
                self._outgoing.extend(batch)
                self._journaling = 0
                self._cpu_s += time.thread_time() - start
                self._cond.notify_all()

    def _beat(self) -> None:
        if self._heartbeat is None:
            return
        if time.monotonic() - self._last_beat < self._heartbeat_interval_s:
            return
        self._last_beat = time.monotonic()
        try:
            self._heartbeat()
        except Exception as exc:  # the store is away; the delivery path reports that
            log.debug("heartbeat failed: %s", exc)

    def _send_loop(self) -> None:
        backoff = self._retry_interval_s
        while True:
            self._beat()
            with self._cond:
                if not self._outgoing and not self._closed:
                    self._cond.wait(timeout=self._flush_interval_s)
                if self._closed and (not self._outgoing or self._failing):
                    return
                if self._refused:  # nothing more will pass; the journal keeps it all
                    self._cond.wait(timeout=self._flush_interval_s)
                    continue
                unit = next_unit(self._outgoing)
            if not unit:
                continue
            start = time.thread_time()
            try:
                self._deliver(unit)
            except Exception as exc:  # the store is away: keep the unit at the head, retry
                refused = self._refusal(exc) if self._refusal is not None else ""
                with self._cond:
                    self._cpu_s += time.thread_time() - start
                    if refused:
                        log.error("the tracking store refuses this run for good: %s", refused)
                        self._refused = refused
                        self._cond.notify_all()
                        continue
                    if not self._failing:
                        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                        log.warning(
                            "tracking store unavailable, records kept for retry: %s", reason
                        )
                    self._failing = True
                    self._cond.notify_all()
                    self._cond.wait(timeout=backoff)
                backoff = min(backoff * 2, self._max_retry_interval_s)
                continue
            backoff = self._retry_interval_s
            with self._cond:
                if self._failing:
                    log.warning("tracking store reachable again")
                self._failing = False
                del self._outgoing[: len(unit)]
                self._written += len(unit)
                self._cpu_s += time.thread_time() - start
                self._cond.notify_all()
