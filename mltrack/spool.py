"""A run's journal on local disk, and ``mltrack sync``, which delivers what a journal holds.

Every open run owns one journal: ``<spool dir>/<run_id>-<tag>.jsonl`` (the tag keeps two
processes that write to one shared run, such as sweep workers and their parent run, apart),
with copies of artifact files in ``<same name>.files/``. The run's writer appends each record
(metric points, params, tags, artifacts) before it sends it, each append fsync'd, so a process
that dies at any moment, the store away or not, leaves everything it logged on disk. A run
that ended with everything delivered deletes its journal; otherwise it appends an ``end``
record and ``mltrack sync`` delivers the lot later (a process that only wrote to a run others
end, a sweep's shared parent, appends ``detach``: delivered, but not ended).

Replaying delivers each record with the live run's own delivery (``mltrack.records``), so it is
idempotent as that is, and ending an ended run sets the same status. Only a replay that
delivered everything deletes the journal; a torn last line (a crash mid-append) is set aside in
``<journal>.torn`` and never blocks the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltrack import process, records
from mltrack.limits import redacted_stdout, tags
from mltrack.warmup import STORES


def spool_dir() -> Path:
    """Where journals live (``MLTRACK_SPOOL_DIR``, default ``~/.cache/mltrack/spool``)."""
    return Path(os.environ.get("MLTRACK_SPOOL_DIR") or Path.home() / ".cache/mltrack/spool")


class Journal:
    """One run's journal file (and its folder of artifact copies), owned by one ``Run``."""

    def __init__(self, folder: Path, run_id: str, tracking_uri: str) -> None:
        self.path = folder / f"{run_id}-{uuid.uuid4().hex[:8]}.jsonl"
        self.files = self.path.with_suffix(".files")
        # The header says whose journal this is, so `mltrack sync` never replays a live one.
        self.header = {"run_id": run_id, "tracking_uri": tracking_uri, **process.identity()}

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
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.files, ignore_errors=True)


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


def replay(path: Path, client: Any = None) -> Replayed:
    """Deliver a journal to its store, then delete it; raise (keeping it) if the store is away.

    Records go through the same ``records.deliver`` as a live run's, in the order journaled.
    Lines that are not JSON (a torn tail) are written to ``<journal>.torn`` beside it and the
    rest is delivered. A journal with no ``end`` record whose process is gone belonged to a run
    that died (SIGKILL, OOM killer): it is ended FAILED with the reason, unless the store
    already shows it ended (``mltrack doctor`` got there first).
    """
    from mlflow.entities import RunTag

    header, lines, torn = read(path)
    client = client or STORES.client(header["tracking_uri"])
    run_id = header["run_id"]
    done = Replayed()
    queue: list[records.Record] = []
    for line in lines:
        if line["type"] not in records.CONTROL:
            queue.append(records.decode(line))
        elif line.get("tags"):  # version 1 kept the end's tags in its record
            queue.append(records.Values("tags", tuple(line["tags"].items())))
    params: set[str] = set()
    tag_keys: set[str] = set()
    while queue:
        unit = records.next_unit(queue)
        records.deliver(client, run_id, unit)
        del queue[: len(unit)]
        for record in unit:
            if isinstance(record, records.Point):
                done.metrics += 1
            elif isinstance(record, records.Values):
                (params if record.kind == "params" else tag_keys).update(
                    k for k, _ in record.values
                )
            elif isinstance(record, records.Artifact):
                done.artifacts += 1
    done.params, done.tags = len(params), len(tag_keys)
    ends = [line for line in lines if line["type"] in records.CONTROL]
    if ends:
        done.ended = ends[-1].get("status") or ""
    elif client.get_run(run_id).info.status == "RUNNING":
        reason = (
            f"process {header.get('pid')} on {header.get('host')} ended without ending the "
            "run; ended by mltrack sync"
        )
        client.log_batch(
            run_id,
            tags=[RunTag(k, v) for k, v in tags({"outcome": "failed", "error": reason}).items()],
        )
        done.ended = "FAILED"
    if done.ended:
        with redacted_stdout():
            client.set_terminated(run_id, status=done.ended)
    if torn:
        aside = path.with_suffix(".torn")
        aside.write_text("\n".join(torn) + "\n")
        done.torn = str(aside)
    path.unlink()
    shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)
    return done


def run_of(path: Path) -> str:
    """The id of the run a journal belongs to (its header's)."""
    return str(read(path)[0]["run_id"])


def discard(path: Path) -> None:
    """Delete a journal and its artifact copies, undelivered records included."""
    path.unlink(missing_ok=True)
    shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)


def refused_advice(path: Path, refused: str) -> str:
    """What to do with a journal whose run the store refuses for good (``records.refusal``)."""
    header = read(path)[0]
    run_id = header["run_id"]
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
