"""What a run logs, as records: their types, their journal codec, and their delivery.

One place for each: the run's writer (``mltrack.sink``) journals records with ``encode`` and
delivers them with ``deliver``; ``mltrack sync`` (``mltrack.spool.replay``) reads a journal back
with ``decode`` and delivers it with the same ``deliver``, unit by unit (``next_unit``), so a
replay does exactly what the live run would have done. ``decode(encode(r)) == r`` for every
record (``tests/test_records.py``).

Delivery is idempotent where the store allows: metric points keep their timestamps (MLflow
drops exact duplicates), params and tags are set to the same values, an artifact overwrites
itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mltrack.limits import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH, redacted_stdout


@dataclass(frozen=True)
class Point:
    """One metric value at a step (epoch), with the wall-clock time it was logged (ms)."""

    key: str
    value: float
    step: int
    timestamp_ms: int


@dataclass(frozen=True)
class Values:
    """Params or tags, already flattened, redacted and cut (``mltrack.limits``)."""

    kind: str  # "params" | "tags"
    values: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Artifact:
    file: str  # a copy the journal owns
    artifact_path: str | None


@dataclass(frozen=True)
class Inputs:
    """Datasets the run used: (context, the fields of ``mlflow.data.Dataset.to_dict()``)."""

    datasets: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


@dataclass(frozen=True)
class Register:
    """A model-registry version of the MLflow model at ``artifact_path`` (delivered after it)."""

    name: str
    artifact_path: str


Record = Point | Values | Artifact | Inputs | Register
# Journal lines that are not records: the run's end (with its status) and a detach.
CONTROL = ("end", "detach")


def encode(record: Record) -> dict[str, Any]:
    """A record as one JSON object of the journal."""
    if isinstance(record, Point):
        return {
            "type": "metric",
            "key": record.key,
            "value": record.value,
            "step": record.step,
            "timestamp_ms": record.timestamp_ms,
        }
    if isinstance(record, Values):
        return {"type": record.kind, "values": dict(record.values)}
    if isinstance(record, Inputs):
        return {
            "type": "inputs",
            "datasets": [{"context": c, **dict(f)} for c, f in record.datasets],
        }
    if isinstance(record, Register):
        return {"type": "register", "name": record.name, "artifact_path": record.artifact_path}
    return {"type": "artifact", "file": record.file, "artifact_path": record.artifact_path}


def decode(line: Mapping[str, Any]) -> Record:
    """The record a journal line holds; ``ValueError`` for a line that is none."""
    kind = line.get("type")
    if kind == "metric":
        return Point(line["key"], float(line["value"]), int(line["step"]), line["timestamp_ms"])
    if kind in ("params", "tags"):
        # Journals of version 1 named the field "tags".
        values = line.get("values", line.get("tags", {}))
        return Values(kind, tuple((str(k), str(v)) for k, v in values.items()))
    if kind == "inputs":
        datasets = []
        for fields in line["datasets"]:
            rest = {k: str(v) for k, v in fields.items() if k != "context"}
            datasets.append((str(fields["context"]), tuple(rest.items())))
        return Inputs(tuple(datasets))
    if kind == "register":
        return Register(line["name"], line["artifact_path"])
    if kind == "artifact":
        return Artifact(line["file"], line["artifact_path"])
    raise ValueError(f"not a record: type {kind!r}")


def next_unit(records: list[Record]) -> list[Record]:
    """What one store call delivers from the head: a run of points (≤ 1000) or one record."""
    if not records or not isinstance(records[0], Point):
        return records[:1]
    unit: list[Record] = []
    for record in records[:MAX_METRICS_PER_BATCH]:
        if not isinstance(record, Point):
            break
        unit.append(record)
    return unit


def deliver(client: Any, run_id: str, unit: list[Record]) -> None:
    """Send one unit (``next_unit``) to the run in the store; raise if the store refuses."""
    from mlflow.entities import Metric, Param, RunTag

    head = unit[0]
    if isinstance(head, Values):
        make = Param if head.kind == "params" else RunTag
        items = [make(k, v) for k, v in head.values]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = items[i : i + MAX_PARAMS_TAGS_PER_BATCH]
            client.log_batch(run_id, **{head.kind: chunk}, synchronous=True)
    elif isinstance(head, Artifact):
        client.log_artifact(run_id, head.file, head.artifact_path)
    elif isinstance(head, Inputs):
        client.log_inputs(run_id, datasets=dataset_inputs(head))
    elif isinstance(head, Register):
        register_model(client, run_id, head.name, head.artifact_path)
    else:
        points = [p for p in unit if isinstance(p, Point)]
        metrics = [Metric(p.key, p.value, p.timestamp_ms, p.step) for p in points]
        client.log_batch(run_id, metrics=metrics, synchronous=True)


def dataset_inputs(record: Inputs) -> list[Any]:
    """An ``Inputs`` record as MLflow ``DatasetInput`` entities."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    return [
        DatasetInput(Dataset(**dict(fields)), tags=[InputTag("mlflow.data.context", context)])
        for context, fields in record.datasets
    ]


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
