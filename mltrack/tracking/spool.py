"""A run's journal on local disk, and ``mltrack sync``, which delivers what a journal holds.

Every open run owns one journal: ``<spool dir>/<key>-<tag>.jsonl`` (``key``: the run's own id,
made by the training process; the tag keeps two processes that write to one shared run, such
as sweep workers and their parent run, apart), with copies of artifact files in ``<same
name>.files/``. The first line after the header is ``create`` (what the run is: experiment,
name, tags, parent) unless the run already exists (a resumed run, a sweep's shared parent:
then the header names its ``run_id``). The run appends each record (metric points, params,
tags, artifacts) before anything else sees it, each append fsync'd, so a process that dies at
any moment leaves everything it logged on disk; it ends with an ``end`` record (a process that
only wrote to a run others end, a sweep's shared parent, appends ``detach``).

The writer process (``mltrack.tracking.writer``, ``mltrack.tracking.courier``) delivers the journal
as it grows and deletes it once the run ended; ``mltrack sync`` delivers what a writer could not
(the store was away when the process ended), with the same courier: a journal is held by one of
them at a time (``flock``), each line is delivered once, a torn last line (a crash
mid-append) is set aside in ``<journal>.torn`` and never blocks the rest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltrack.tracking import process, records
from mltrack.tracking.limits import redacted_stdout
from mltrack.tracking.limits import tags as limit_tags
from mltrack.tracking.outcomes import STATUS

log = logging.getLogger("mltrack.tracking.run")


def spool_dir() -> Path:
    """Where journals live (``MLTRACK_SPOOL_DIR``, default ``~/.cache/mltrack/spool``)."""
    return Path(os.environ.get("MLTRACK_SPOOL_DIR") or Path.home() / ".cache/mltrack/spool")


class Journal:
    """One run's journal file (and its folder of artifact copies), owned by one ``Run``."""

    def __init__(self, folder: Path, key: str, tracking_uri: str, run_id: str = "") -> None:
        self.path = folder / f"{key}-{uuid.uuid4().hex[:8]}.jsonl"
        self.files = self.path.with_suffix(".files")
        self.lines = 0  # lines appended after the header
        # The header says whose journal this is, so `mltrack sync` never replays a live one.
        self.header = {
            "key": key, "run_id": run_id, "tracking_uri": tracking_uri, **process.identity()
        }  # fmt: skip

    def exists(self) -> bool:
        return self.path.exists()

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append records durably (fsync'd); the first append writes the header."""
        lines = [json.dumps(r) for r in records]
        if not lines:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = not self.path.exists()
        with self.path.open("a") as handle:
            if fresh:
                handle.write(json.dumps({"type": "run", **self.header}) + "\n")
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.lines += len(lines)

    def keep_file(self, source: Path, artifact_path: str | None) -> Path:
        """A durable copy of an artifact file, which the caller may delete once we return."""
        folder = self.files / uuid.uuid4().hex[:8]  # two files of one name never collide
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = folder / source.name
        shutil.copy2(source, target)
        with target.open("rb") as handle:
            os.fsync(handle.fileno())
        return target

    def keep_folder(self, source: Path) -> Path:
        """A durable copy of a folder (an MLflow model), which the caller may then delete."""
        target = self.files / uuid.uuid4().hex[:8] / source.name
        shutil.copytree(source, target)
        for path in target.rglob("*"):
            if path.is_file():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
        return target

    def delete(self) -> None:
        discard(self.path)


def read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """The journal's header, its lines, and the lines that are not JSON (a crash mid-append
    leaves its last line torn): those are returned apart, never fatal."""
    header: dict[str, Any] | None = None
    lines: list[dict[str, Any]] = []
    torn: list[str] = []
    for text in path.read_text(errors="replace").splitlines():
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            torn.append(text)
            continue
        if header is None:
            header = line
        else:
            lines.append(line)
    if header is None or header.get("type") != "run":
        raise ValueError(f"{path}: not an mltrack journal (no header)")
    return header, lines, torn


@dataclass
class Replayed:
    metrics: int = 0
    params: int = 0
    tags: int = 0
    artifacts: int = 0
    ended: str = ""  # the status the run was ended with here, if any
    torn: str = ""  # where the lines that were not records were set aside
    set_aside: int = 0  # records the store refused, kept in <spool>/refused/


def replay(path: Path, stores: Any = None) -> Replayed:
    """Deliver a journal to its store (``mltrack.tracking.courier``, as the writer would), deleting
    it once delivered; raise the store's error, keeping what is left, if the store is away or
    refuses the run. A journal with no ``end`` record whose process is gone belonged to a run
    that died (SIGKILL, OOM killer): it is ended KILLED with the reason, unless the store
    already shows it ended (``mltrack doctor`` got there first). ``Busy`` (``courier``) if a
    writer or another sync holds it.
    """
    from mltrack.tracking.courier import AWAY, BAD, DONE, REFUSED, Courier
    from mltrack.tracking.warmup import STORES

    courier = Courier(path, stores or STORES)
    courier.owner_gone = True  # what it holds is all there will be (``ready_to_replay``)
    try:
        while not courier.finished and courier.step():
            pass
    finally:
        courier.release()
    if courier.state in (AWAY, BAD, REFUSED):
        raise Undelivered(courier.state, courier.reason)
    if courier.state != DONE and courier.lines:
        raise Undelivered(AWAY, "its parent run is not in the store yet")
    counts = courier.counts
    done = Replayed(counts["metrics"], counts["params"], counts["tags"], counts["artifacts"])
    done.ended, done.set_aside = courier.ended, courier.set_aside
    if courier.state == DONE:
        ack_path(path).unlink(missing_ok=True)
    if courier.torn:
        done.torn = str(path.with_suffix(".torn"))
    return done


class Undelivered(Exception):
    """What a replay could not deliver: ``state`` (``away``, ``refused``, ``bad``) and why."""

    def __init__(self, state: str, reason: str) -> None:
        super().__init__(reason)
        self.state = state


def ack_path(journal: Path) -> Path:
    """Where the writer says how far a journal got (``mltrack.tracking.courier``)."""
    return journal.with_suffix(".ack")


def read_ack(journal: Path) -> dict[str, Any]:
    """The writer's last word on ``journal``: run id, lines delivered, state ({} if none)."""
    try:
        found = json.loads(ack_path(journal).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def run_of(path: Path) -> str:
    """The id of the run a journal belongs to (its header's or, once the writer made the run,
    its ack's; the journal's key while the run is not yet in the store)."""
    header = read(path)[0]
    return str(header["run_id"] or _ack_run_id(path) or header.get("key", ""))


def _ack_run_id(path: Path) -> str:
    return str(read_ack(path).get("run_id") or "")


def discard(path: Path) -> None:
    """Delete a journal and its artifact copies, undelivered records included."""
    path.unlink(missing_ok=True)
    ack_path(path).unlink(missing_ok=True)
    shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)


def refused_advice(path: Path, refused: str) -> str:
    """What to do with a journal whose run the store refuses for good (``records.refusal``)."""
    from mltrack.tracking.warmup import STORES

    header = read(path)[0]
    run_id = header["run_id"] or _ack_run_id(path)
    client = STORES.client(header["tracking_uri"])
    try:
        run = client.get_run(run_id)
        experiment = client.get_experiment(run.info.experiment_id)
    except Exception:  # the run itself is gone (purged): only discarding is left
        restore = "the run is gone from the store"
    else:
        restore = (
            "restore it with `mlflow experiments restore --experiment-id "
            f"{experiment.experiment_id}`"
            if experiment.lifecycle_stage == "deleted"
            else f"restore it with `mlflow runs restore --run-id {run_id}`"
        )
    return (
        f"the store refuses run {run_id} for good ({refused}), kept: {restore} and sync again, "
        f"or drop its records with `mltrack sync --discard {run_id}`"
    )


def pending(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def ready_to_replay(path: Path) -> bool:
    """Ended journals always; unended ones only once their process is known to be gone."""
    header, lines, _ = read(path)
    if any(line["type"] in records.CONTROL for line in lines):
        return True
    return (
        process.is_gone(
            str(header.get("host", "")),
            int(header.get("pid", 0)),
            float(header.get("pid_start", 0)),
        )
        is True
    )


# -- writing to runs no process holds open (sweeps, doctor, mltrack ui) ------------------------
def tag_run(tracking_uri: str, run_id: str, tags: Mapping[str, Any]) -> None:
    """Tag a run this process does not hold open (a sweep marks its best trial's run)."""
    from mlflow.entities import RunTag

    from mltrack.tracking.warmup import STORES

    items = [RunTag(k, v) for k, v in limit_tags(tags).items()]
    STORES.client(tracking_uri).log_batch(run_id, tags=items)


def tag_experiment(tracking_uri: str, experiment_id: str, key: str, value: str) -> None:
    """Set one experiment tag (``mltrack ui``'s saved runs-table view)."""
    from mltrack.tracking.warmup import STORES

    STORES.client(tracking_uri).set_experiment_tag(experiment_id, key, value)


def end_orphan(tracking_uri: str, run_id: str, error: str) -> bool:
    """End a RUNNING run whose process died (doctor, a sweep's stale trial) as FAILED.

    Returns False, touching nothing, if the run has already left RUNNING.
    """
    from mltrack.tracking.warmup import STORES

    client = STORES.client(tracking_uri)
    if client.get_run(run_id).info.status != "RUNNING":
        return False
    tag_run(tracking_uri, run_id, {"outcome": "failed", "error": error})
    with redacted_stdout():
        client.set_terminated(run_id, STATUS["failed"])
    return True


def check_store(stores: Any, uri: str, experiment: str) -> tuple[str, str]:
    """Whether ``uri`` takes runs in ``experiment`` before any data loads: (``OK``, ""),
    (``AWAY``, why) or (``BAD``, one line naming the argument). A new embedded store is left
    for the first run to create, so bad input leaves no store behind."""
    from mltrack.errors import UsageError
    from mltrack.tracking.courier import AWAY, BAD, OK
    from mltrack.tracking.limits import redact_uri

    where = redact_uri(uri)
    try:
        stores.open_existing(uri, experiment)
    except UsageError as exc:
        return BAD, str(exc)
    except Exception as exc:
        kind, reason = records.classify(exc)
        if kind == records.OUTAGE and not records.opening_refused(uri, exc):
            return AWAY, records.outage_reason(redact_uri(str(exc)))
        if kind == records.CREDENTIALS:
            return BAD, f"--tracking-uri {where}: the store refuses these credentials ({reason})"
        return BAD, f"--tracking-uri {where}: MLflow cannot open it ({redact_uri(reason)})"
    return OK, ""


def say_where(run_id: str, ack: dict[str, Any], journal: Path, uri: str, waited_s: float) -> None:
    """One line on a run the store has not all of at its end (``ack``: the writer's last
    word): refused for good, away (unless said at its start), or still being delivered."""
    from mltrack.tracking import writer
    from mltrack.tracking.courier import AWAY, BAD, REFUSED
    from mltrack.tracking.limits import redact_uri

    state, where = ack.get("state"), redact_uri(uri)
    if state in (REFUSED, BAD):
        log.error(
            "run %s: the store refuses it for good (%s); everything it logged is kept in %s: "
            "restore it in MLflow and run `mltrack sync` (which says how), or drop the records "
            "with `mltrack sync --discard %s`", run_id, ack.get("reason"), journal, run_id,
        )  # fmt: skip
    elif state == AWAY and not writer.said_away(where):  # else its start said where and how
        log.warning(
            "run %s is journaled in %s (%s is away: %s); `mltrack sync` delivers it when the "
            "store is back", run_id, journal, where, ack.get("reason"),
        )  # fmt: skip
    elif state != AWAY:
        log.warning(
            "run %s: the writer is still delivering it to %s after %.0f s and goes on after "
            "this process ends (journal: %s)", run_id, where, waited_s, journal,
        )  # fmt: skip
