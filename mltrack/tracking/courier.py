"""The writer's side: delivering journals to their stores, in order and exactly once.

A training process never talks to MLflow: ``mltrack.tracking.run`` journals what a run logs, and a
``Courier`` delivers one journal, held by one writer (or ``mltrack sync``) at a time through an
exclusive ``flock``. It tails the journal as it grows:

1. the ``create`` line makes the run (experiment made if new, parent resolved from its key,
   ``mltrack.journal`` tag = the journal's key, so a restarted writer finds the run it made
   instead of making a second), or reopens a resumed one;
2. records go in order, unit by unit (``records.next_unit``/``records.deliver``, the functions
   a live run always used); after each unit ``<journal>.ack`` says how many lines are in the
   store, so a writer that dies and the next one (or ``mltrack sync``) deliver each line once;
3. ``end`` sets the run's status and deletes the journal; a journal whose process died
   without one is ended KILLED, with the reason, once the rest is delivered.

The store's answers are sorted once (``records.classify``): an outage is retried with back-off
(1 s doubling to 30 s), never dropping a line; a refused record is set aside in
``<spool>/refused/<run_id>.jsonl``, named in one line, and the rest goes on; a run gone or
deleted, or credentials refused, stop the journal where it is (kept for ``mltrack sync``),
and at creation are bad input (``BAD``). A line that is no record is set aside as torn.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from mltrack.errors import UsageError
from mltrack.tracking import records
from mltrack.tracking.limits import redact_uri, redacted_stdout, tags
from mltrack.tracking.outcomes import STATUS
from mltrack.tracking.process import HEARTBEAT_TAG
from mltrack.tracking.spool import ack_path, read_ack
from mltrack.tracking.warmup import STORES, Stores, refuse_deleted

log = logging.getLogger("mltrack.tracking.writer")

# A courier's state, as its ack file tells the training process.
OK, AWAY, BAD, REFUSED, DONE = "ok", "away", "bad", "refused", "done"
KEY_TAG = "mltrack.journal"  # the journal's key: finds the run a restarted writer made
HEARTBEAT_S = 30.0
RETRY_S, MAX_RETRY_S = 1.0, 30.0


class Busy(Exception):
    """Another process (a writer, ``mltrack sync``) holds the journal."""


class NotYet(Exception):
    """What this line needs is not in the store yet (a parent run still journaled)."""


def _write_ack(journal: Path, fields: dict[str, Any]) -> None:
    temporary = journal.with_suffix(".ack.tmp")
    temporary.write_text(json.dumps(fields))
    os.replace(temporary, ack_path(journal))


class Courier:
    """Delivers one journal (see the module's docstring). ``Busy`` if another holds it."""

    def __init__(self, path: Path, stores: Stores = STORES, *, keys: dict[str, str] | None = None):
        self.path = path
        self._file = path.open("rb")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise Busy(str(path)) from None
        try:
            self.header = json.loads(self._file.readline())
        except ValueError:
            self._file.close()
            raise ValueError(f"{path}: not an mltrack journal (no header)") from None
        if not isinstance(self.header, dict) or self.header.get("type") != "run":
            self._file.close()
            raise ValueError(f"{path}: not an mltrack journal (no header)")
        self.stores, self.keys = stores, {} if keys is None else keys
        self.key = str(self.header.get("key") or self.header["run_id"])
        self.uri = str(self.header["tracking_uri"])
        ack = read_ack(path)
        self.restarted = bool(ack)
        self.run_id = str(self.header.get("run_id") or ack.get("run_id") or "")
        self.experiment_id = str(ack.get("experiment_id", ""))
        self.done = int(ack.get("done", 0))  # lines after the header that are in the store
        self.set_aside = int(ack.get("set_aside", 0))
        self._read = 0  # lines after the header read so far
        self._partial = b""
        self.lines: list[dict[str, Any]] = []  # read, not yet delivered
        self.torn: list[str] = []
        self.state, self.reason = OK, ""
        self.owner_gone = False
        self.told: tuple[str, str] | None = None  # (outcome, error) sent without the journal
        self.finished = False
        self.ended = ""
        self.counts = {"metrics": 0, "params": 0, "tags": 0, "artifacts": 0}
        self._retry_at, self._backoff = 0.0, RETRY_S
        self._beat = time.monotonic()
        self._monitor: Any = None

    # -- reading ----------------------------------------------------------------------------
    def _tail(self) -> None:
        chunk = self._partial + self._file.read()
        *complete, self._partial = chunk.split(b"\n")
        if self.owner_gone and self._partial.strip():  # its writer died mid-line: torn
            complete.append(self._partial)
            self._partial = b""
        for raw in complete:
            if not raw.strip():
                continue
            self._read += 1
            if self._read <= self.done:
                continue
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.torn.append(raw.decode(errors="replace"))
                self.done += 1

    # -- one pass ---------------------------------------------------------------------------
    def step(self) -> bool:
        """Deliver what the journal holds now. True if anything reached the store."""
        if self.finished:
            return False
        read = self._read
        self._tail()
        if time.monotonic() < self._retry_at and not (self.state == AWAY and self._read > read):
            return False  # backing off; new lines (the run's end) are worth one try at once
        progressed = False
        try:
            while not self.finished:
                if not self._next():
                    break
                progressed = True
            self._heartbeat()
        except NotYet:
            self._retry_at = time.monotonic() + RETRY_S
        except Exception as exc:
            self._failed(exc)
            return progressed
        if self.state == AWAY:
            log.warning("%s is reachable again; delivering run %s", self._where, self.run_id)
        if self.state != DONE and not self.finished:
            self.state, self._backoff = OK, RETRY_S
        if progressed and not self.finished:
            self._ack()
        return progressed

    @property
    def _where(self) -> str:
        return redact_uri(self.uri)

    def _next(self) -> bool:
        """Deliver the head of the journal (a line or a unit of records); False if none."""
        if not self.lines:
            if self.owner_gone and not self._partial:
                self._end_dead()
                return True
            return False
        head = self.lines[0]
        kind = head.get("type")
        if kind == "create":
            self._create(head)
            self._advance(1)
        elif not self.run_id:
            raise ValueError(f"{self.path}: records before the run's create line")
        elif kind in records.CONTROL:
            self._end(str(head.get("status") or "") if kind == "end" else "")
        else:
            queue = []
            for line in self.lines[: records.MAX_METRICS_PER_BATCH]:
                if line.get("type") in (*records.CONTROL, "create"):
                    break
                try:
                    queue.append(records.decode(line))
                except (ValueError, KeyError, TypeError):  # JSON, but no record: set aside
                    break
            if not queue:
                self.torn.append(json.dumps(self.lines[0]))
                self._advance(1)
                return True
            unit = records.next_unit(queue)
            self._deliver(unit)
            self._advance(len(unit))
        return True

    def _advance(self, n: int) -> None:
        del self.lines[:n]
        self.done += n

    def _ack(self) -> None:
        _write_ack(
            self.path,
            {
                "run_id": self.run_id,
                "experiment_id": self.experiment_id,
                "done": self.done,
                "read": self._read,
                "state": self.state,
                "reason": self.reason,
                "set_aside": self.set_aside,
            },
        )

    # -- the store's side -------------------------------------------------------------------
    def _client(self) -> Any:
        return self.stores.client(self.uri)

    def _create(self, line: dict[str, Any]) -> None:
        client = self._client()
        if line.get("resume"):
            records.reopen(client, self.run_id, line.get("tags", {}))
            self.experiment_id = str(client.get_run(self.run_id).info.experiment_id)
        else:
            name = str(line.get("experiment") or "Default")
            experiment_id = line.get("experiment_id") or ""
            if not experiment_id:
                refuse_deleted(client.get_experiment_by_name(name))
                experiment_id = records.get_or_create_experiment(client, name, self.uri)
            run_tags = {**line.get("tags", {}), KEY_TAG: self.key}
            parent = line.get("parent_run_id") or self._resolve(line.get("parent_key"), client)
            if parent:
                run_tags["mlflow.parentRunId"] = parent
            found = self._made_before(client, experiment_id)  # by a writer that died
            self.run_id = found or str(
                client.create_run(
                    experiment_id, run_name=line.get("run_name"), tags=tags(run_tags)
                ).info.run_id
            )
            self.experiment_id = str(experiment_id)
        self.keys[self.key] = self.run_id
        every = float(line.get("system_metrics_interval") or 0)
        if every > 0:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.run_id, sampling_interval=every, tracking_uri=self.uri
            )
            self._monitor.start()
        self.state = OK
        self._ack()

    def _resolve(self, key: Any, client: Any) -> str:
        """The run id of the run whose journal key is ``key`` ("" for none)."""
        if not key:
            return ""
        if key in self.keys:
            return self.keys[key]
        experiments = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(experiments, f"tags.`{KEY_TAG}` = '{key}'", max_results=1)
        if not found:
            raise NotYet(key)
        self.keys[str(key)] = str(found[0].info.run_id)
        return self.keys[str(key)]

    def _made_before(self, client: Any, experiment_id: str) -> str:
        found = client.search_runs(
            [experiment_id], f"tags.`{KEY_TAG}` = '{self.key}'", max_results=1
        )
        return str(found[0].info.run_id) if found else ""

    def _deliver(self, unit: list[records.Record]) -> None:
        client = self._client()
        try:
            records.deliver(client, self.run_id, unit)
        except Exception as exc:
            if records.classify(exc)[0] != records.RECORD:
                raise
            pieces = records.split(unit)
            if len(pieces) == 1:
                self._set_aside(unit[0] if len(unit) == 1 else unit, str(exc))
                return
            for piece in pieces:  # the refused one alone is set aside
                self._deliver(piece)
            return
        self._count(unit)

    def _count(self, unit: list[records.Record]) -> None:
        for record in unit:
            if isinstance(record, records.Point):
                self.counts["metrics"] += 1
            elif isinstance(record, records.Values):
                self.counts[record.kind] += len(record.values)
            elif isinstance(record, records.Artifact):
                self.counts["artifacts"] += 1

    def _set_aside(self, what: records.Record | list[records.Record], error: str) -> None:
        unit = what if isinstance(what, list) else [what]
        reason = (error.splitlines() or [""])[0][:200]
        folder = self.path.parent / "refused"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = folder / f"{self.run_id}.jsonl"
        with target.open("a") as handle:
            for record in unit:
                entry = {"record": records.encode(record), "reason": reason, "key": self.key}
                handle.write(json.dumps(entry) + "\n")
        self.set_aside += len(unit)
        log.error(
            "run %s: the store refused %s (%s); set aside in %s, the rest is delivered",
            self.run_id, "; ".join(records.describe(r) for r in unit[:3]), reason, target,
        )  # fmt: skip

    def _heartbeat(self) -> None:
        if self.owner_gone or not self.run_id or self.finished:
            return
        if time.monotonic() - self._beat >= HEARTBEAT_S:
            self._beat = time.monotonic()
            self._client().set_tag(self.run_id, HEARTBEAT_TAG, str(int(time.time())))

    def _end(self, status: str) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        if status:
            with redacted_stdout():
                self._client().set_terminated(self.run_id, status=status)
        self.ended = status
        self._close(delete=True)

    def _end_dead(self) -> None:
        """The owner died without an ``end``: KILLED with why, unless already ended."""
        client = self._client()
        if not self.run_id:  # it died before its run could be made: nothing to end
            self._close(delete=True)
            return
        if client.get_run(self.run_id).info.status != "RUNNING":
            self._end("")
            return
        header = self.header
        reason = (
            f"process {header.get('pid')} on {header.get('host')} ended without ending its run "
            "(killed: SIGKILL, the OOM killer, or the interpreter crashed)"
        )
        # Or its end could not be journaled (a full disk) and it told the writer instead.
        outcome, reason = self.told or ("killed", reason)
        ended = tags({"outcome": outcome, "error": reason})
        records.deliver(client, self.run_id, [records.Values("tags", tuple(ended.items()))])
        self._end(STATUS[outcome])

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, UsageError):
            kind, reason = records.CREDENTIALS, str(exc)
        else:
            kind, reason = records.classify(exc)
            reason = redact_uri(reason)
            if kind == records.CREDENTIALS:
                reason = (
                    f"--tracking-uri {self._where}: the store refuses these credentials ({reason})"
                )
            elif kind != records.OUTAGE and not self.run_id:
                reason = f"--tracking-uri {self._where}: the store refuses the run ({reason})"
        if kind == records.OUTAGE and not self.run_id and records.opening_refused(self.uri, exc):
            kind, reason = records.RUN, f"--tracking-uri {self._where}: MLflow cannot open it"
        if kind == records.OUTAGE:
            reason = records.outage_reason(redact_uri(str(exc)))
            if self.state != AWAY and self.run_id:  # before: the training process says it
                log.warning(
                    "%s is away (%s); run %s stays journaled in %s and is delivered when it "
                    "is back", self._where, reason, self.run_id or self.key, self.path.parent
                )  # fmt: skip
            self.state, self.reason = AWAY, reason
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_RETRY_S)
            self._ack()
            return
        # Refused for good: at creation that is bad input; later, the run is gone meanwhile.
        self.state, self.reason = (REFUSED if self.run_id else BAD), reason
        if self.state == REFUSED:
            log.error("run %s: the store refuses it for good (%s); kept in %s", self.run_id,
                      reason, self.path)  # fmt: skip
        self._ack()
        self._close(delete=False)

    def _close(self, *, delete: bool) -> None:
        if delete:
            if self.torn:
                self.path.with_suffix(".torn").write_text("\n".join(self.torn) + "\n")
            self.state = DONE
            self._ack()
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.path.with_suffix(".files"), ignore_errors=True)
            if self.owner_gone:
                ack_path(self.path).unlink(missing_ok=True)
        self.finished = True
        self._file.close()

    def release(self) -> None:
        """Let go of the journal without finishing it (the writer exits; sync takes over)."""
        if not self.finished:
            self.finished = True
            self._file.close()
