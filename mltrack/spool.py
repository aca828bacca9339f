"""A run's journal on local disk, and ``mltrack sync``, which delivers what a journal holds.

Every open run owns one journal: ``<spool dir>/<run_id>-<tag>.jsonl`` (the tag keeps two
processes that write to one shared run, such as sweep workers and their parent run, apart),
with copies of artifact files in ``<same name>.files/``. The run's writer appends each record
(metric points, params, tags, artifacts) before it sends it, each append fsync'd, so a process
that dies at any moment, the store away or not, leaves everything it logged on disk. A run
that ended with everything delivered deletes its journal; otherwise it appends an ``end``
record and ``mltrack sync`` delivers the lot later (a process that only wrote to a run others
end, a sweep's shared parent, appends ``detach``: delivered, but not ended).

Replaying is idempotent: metric points keep their timestamps and MLflow's store drops exact
duplicates, params and tags are set to the same values again, an artifact overwrites itself,
and ending an ended run sets the same status. Only a replay that delivered everything deletes
the journal.
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

from mltrack import process, warmup
from mltrack.limits import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH, redacted_stdout, tags


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

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.files, ignore_errors=True)


def read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not lines or lines[0].get("type") != "run":
        raise ValueError(f"{path}: not an mltrack journal (no header)")
    return lines[0], lines[1:]


@dataclass
class Replayed:
    metrics: int = 0
    params: int = 0
    tags: int = 0
    artifacts: int = 0
    ended: str = ""  # the status the run was ended with here, if any


def _values(record: Mapping[str, Any]) -> dict[str, str]:
    # Journals of version 1 named the field "tags" and kept the end's tags in its record.
    return dict(record.get("values", record.get("tags", {})))


def replay(path: Path, client: Any = None) -> Replayed:
    """Deliver a journal to its store, then delete it; raise (keeping it) if the store is away.

    A journal with no ``end`` record whose process is gone belonged to a run that died
    (SIGKILL, OOM killer): it is ended FAILED with the reason, unless the store already shows
    it ended (``mltrack doctor`` got there first).
    """
    from mlflow.entities import Metric, Param, RunTag

    header, records = read(path)
    client = client or warmup.shared_client(header["tracking_uri"])
    run_id = header["run_id"]
    done = Replayed()
    metrics = [
        Metric(r["key"], r["value"], r["timestamp_ms"], r["step"])
        for r in records
        if r["type"] == "metric"
    ]
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    done.metrics = len(metrics)
    params = {k: v for r in records if r["type"] == "params" for k, v in _values(r).items()}
    tag_values = {
        k: v for r in records if r["type"] in ("tags", "end") for k, v in _values(r).items()
    }
    for kind, values in (("params", params), ("tags", tag_values)):
        items = [(Param if kind == "params" else RunTag)(k, v) for k, v in values.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run_id, **{kind: items[i : i + MAX_PARAMS_TAGS_PER_BATCH]})
    done.params, done.tags = len(params), len(tag_values)
    for record in records:
        if record["type"] == "inputs":
            client.log_inputs(run_id, datasets=dataset_inputs(record))
        if record["type"] == "artifact":
            client.log_artifact(run_id, record["file"], record["artifact_path"])
            done.artifacts += 1
        if record["type"] == "register":
            register_model(client, run_id, record["name"], record["artifact_path"])
    ends = [r for r in records if r["type"] in ("end", "detach")]
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
    path.unlink()
    shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)
    return done


def dataset_inputs(record: Mapping[str, Any]) -> list[Any]:
    """An ``inputs`` record as MLflow ``DatasetInput`` entities."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    out = []
    for fields in record["datasets"]:
        fields = dict(fields)
        context = fields.pop("context")
        tags = [InputTag("mlflow.data.context", context)]
        out.append(DatasetInput(Dataset(**fields), tags=tags))
    return out


def register_model(client: Any, run_id: str, name: str, artifact_path: str) -> str:
    """A new version of registered model ``name`` from the run's MLflow model; its number.

    As ``mlflow.register_model("runs:/ID/PATH", name)`` does, on this client's store: the
    registered model is created on first use, and the version's source is the model's
    artifact location.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    with redacted_stdout():
        version = client.create_model_version(name, source, run_id=run_id)
    return str(version.version)


def pending(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def ready_to_replay(path: Path) -> bool:
    """Ended journals always; unended ones only once their process is known to be gone."""
    header, records = read(path)
    if any(r["type"] in ("end", "detach") for r in records):
        return True
    return (
        process.is_gone(
            str(header.get("host", "")),
            int(header.get("pid", 0)),
            float(header.get("pid_start", 0)),
        )
        is True
    )
