"""What a run logs, as records: their types, their journal codec, and their delivery.

One place for each: the run's writer (``mltrack.tracking.sink``) journals records with ``encode``
and delivers them with ``deliver``; ``mltrack sync`` (``mltrack.tracking.spool.replay``) reads a
journal back with ``decode`` and delivers it with the same ``deliver``, unit by unit
(``next_unit``), so a replay does exactly what the live run would have done. ``decode(encode(r)) ==
r`` for every record (``tests/test_records.py``).

Delivery is idempotent where the store allows: metric points keep their timestamps (MLflow
drops exact duplicates), params and tags are set to the same values, an artifact overwrites
itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mltrack.tracking.limits import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
    redacted_stdout,
)
from mltrack.tracking.uris import default_artifact_location, is_database


@dataclass(frozen=True)
class Point:
    """One metric value at a step (epoch), with the wall-clock time it was logged (ms)."""

    key: str
    value: float
    step: int
    timestamp_ms: int


@dataclass(frozen=True)
class Values:
    """Params or tags, already flattened, redacted and cut (``mltrack.tracking.limits``)."""

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
class Model:
    """An MLflow model folder, logged as an MLflow 3 logged model named ``name`` whose source
    is the run (so ``runs:/<run>/<name>``, ``models:/<model_id>``, the runs table's Models
    column and the experiment's Models tab all find it), linked to the run's ``metrics``."""

    name: str
    folder: str  # a copy the journal owns
    metrics: tuple[Point, ...] = ()


@dataclass(frozen=True)
class Register:
    """A model-registry version of the run's logged model ``artifact_path`` (delivered after
    it; the name is the logged model's, or a run artifact path for journals of version 2)."""

    name: str
    artifact_path: str


Record = Point | Values | Artifact | Inputs | Model | Register
# Journal lines that are not records: the run's end (with its status) and a detach.
CONTROL = ("end", "detach")


def encode(record: Record) -> dict[str, Any]:
    """A record as one JSON object of the journal."""
    if isinstance(record, Model):
        return {
            "type": "model",
            "name": record.name,
            "folder": record.folder,
            "metrics": [encode(p) for p in record.metrics],
        }
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
    if kind == "model":
        points = tuple(p for p in map(decode, line.get("metrics", [])) if isinstance(p, Point))
        return Model(line["name"], line["folder"], points)
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


# How a store answers what cannot pass (``classify``): the run's own record is bad, the run
# itself is gone or closed to writes, or the credentials are refused; anything else is an
# outage (connection refused, unknown host, time-out, 5xx, 429, a locked or unreachable database).
RECORD, RUN, CREDENTIALS, OUTAGE = "record", "run", "credentials", "outage"
_INACTIVE = "must be in the 'active' state"  # MLflow's answer for a deleted run or experiment


def classify(exc: BaseException) -> tuple[str, str]:
    """Sort a store's error into (kind, reason): ``RECORD``, ``RUN``, ``CREDENTIALS`` or
    ``OUTAGE``. The one place every delivery (the writer, ``mltrack sync``) asks.

    - MLflow's REST API and its SQL store raise ``MlflowException`` whose HTTP status
      (``get_http_status_code``) says which: 401/403 are credentials; 404 with
      ``RESOURCE_DOES_NOT_EXIST`` and 400 "must be in the 'active' state" are a run (or its
      experiment) that is gone or deleted; any other 4xx but 408/429 is a refused record (a
      changed param value, an invalid name or value); 5xx, 408, 429 are outages.
    - A server that answers a 4xx page that is not MLflow's JSON (a proxy) gets the same
      sorting by its status; an exception that is not MLflow's (``OSError``, SQLAlchemy's
      ``OperationalError``, ``requests``' connection errors) is an outage.
    """
    message = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    status = getattr(exc, "get_http_status_code", None)
    if status is None:
        return OUTAGE, message
    code = int(status())
    if code in (401, 403):
        return CREDENTIALS, message
    if code in (408, 429) or code >= 500 or code < 400:
        return OUTAGE, message
    if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or _INACTIVE in message:
        return RUN, message
    return RECORD, message


_OUTAGES = {
    "Connection refused": "connection refused",
    "Name or service not known": "unknown host",
    "Temporary failure in name resolution": "unknown host",
    "nodename nor servname": "unknown host",
    "timed out": "timed out",
    "timeout": "timed out",
    "error code 5": "the server answered 5xx",
}


def outage_reason(message: str) -> str:
    """An outage in a few words (``connection refused``, ``unknown host``, ``timed out``)
    rather than a client library's whole retry report."""
    for marker, short in _OUTAGES.items():
        if marker in message:
            return short
    return message[:120]


def describe(record: Record) -> str:
    """A record named for a person: ``param hf.learning_rate``, ``metric loss at step 3``."""
    if isinstance(record, Point):
        return f"metric {record.key} at step {record.step}"
    if isinstance(record, Values):
        return f"{record.kind[:-1]} {', '.join(k for k, _ in record.values)}"
    if isinstance(record, Artifact):
        return f"artifact {record.file.rsplit('/', 1)[-1]}"
    if isinstance(record, Model):
        return f"model {record.name}"
    if isinstance(record, Register):
        return f"registration of {record.artifact_path} as {record.name}"
    return "dataset inputs"


def split(unit: list[Record]) -> list[list[Record]]:
    """A refused unit in smaller pieces: its records one by one, a params or tags record
    value by value; one piece when it cannot be split."""
    if len(unit) > 1:
        return [[r] for r in unit]
    head = unit[0]
    if isinstance(head, Values) and len(head.values) > 1:
        return [[Values(head.kind, (item,))] for item in head.values]
    return [unit]


def opening_refused(uri: str, exc: BaseException) -> bool:
    """MLflow's own error on a database (an unknown schema) is final, not an outage: a
    database that cannot be reached raises its driver's error instead."""
    return is_database(uri) and hasattr(exc, "error_code")


def refusal(exc: BaseException) -> str:
    """Why the store refuses a whole run for good ("" if it does not): the run or its
    experiment is gone or deleted, or the credentials are refused (``classify``)."""
    kind, reason = classify(exc)
    return reason if kind in (RUN, CREDENTIALS) else ""


# The runs of this process the store refused for good (run id -> why), in the order they
# ended: a command reports them in its last line and exits non-zero (their journals are kept).
REFUSED: dict[str, str] = {}


def refused_line() -> str:
    """One line for the end of a command whose runs the store refused for good (``REFUSED``)."""
    ids = ", ".join(REFUSED)
    why = next(iter(REFUSED.values()), "")
    return (
        f"the store refused run(s) {ids} for good ({why}); their records are kept in the "
        "journal: restore the experiment and run `mltrack sync`, or `mltrack sync --discard "
        "RUN_ID` to drop them"
    )


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
        # Idempotent for a replay: MLflow refuses a dataset input the run already has.
        present = {
            (i.dataset.name, i.dataset.digest, tuple((t.key, t.value) for t in i.tags))
            for i in client.get_run(run_id).inputs.dataset_inputs
        }
        new = [
            i
            for i in dataset_inputs(head)
            if (i.dataset.name, i.dataset.digest, tuple((t.key, t.value) for t in i.tags))
            not in present
        ]
        if new:
            client.log_inputs(run_id, datasets=new)
    elif isinstance(head, Model):
        log_model(client, run_id, head)
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


def logged_model(client: Any, run_id: str, name: str) -> Any | None:
    """The run's logged model called ``name`` (the newest), or None."""
    experiment_id = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"name = '{name}'"
    )
    mine = [m for m in found if m.source_run_id == run_id]
    return max(mine, key=lambda m: m.creation_timestamp) if mine else None


def log_model(client: Any, run_id: str, record: Model) -> str:
    """Create (or, on a replay, find) the run's logged model, upload the folder into it, mark
    it READY, record it as the run's output and link the metrics to it; its model id."""
    from mlflow.entities import LoggedModelOutput, Metric

    model = logged_model(client, run_id, record.name)
    if model is None:
        experiment_id = client.get_run(run_id).info.experiment_id
        model = client.create_logged_model(experiment_id, name=record.name, source_run_id=run_id)
    client.log_model_artifacts(model.model_id, record.folder)
    client.finalize_logged_model(model.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
    linked = [
        Metric(p.key, p.value, p.timestamp_ms, p.step, model_id=model.model_id, run_id=run_id)
        for p in record.metrics
    ]
    for i in range(0, len(linked), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=linked[i : i + MAX_METRICS_PER_BATCH], synchronous=True)
    return str(model.model_id)


def register_model(client: Any, run_id: str, name: str, artifact_path: str) -> str:
    """A new version of registered model ``name`` from the run's model; its number.

    The run's logged model called ``artifact_path`` if it has one (source: its location),
    else the MLflow model among the run's artifacts at ``artifact_path`` (journals written
    before models were logged models). The registered model is created on first use.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    model = logged_model(client, run_id, artifact_path)
    if model is not None:
        # Its artifact location, not models:/<id>: MLflow 3.17 resolves that URI with a client
        # of the default tracking URI (ModelsArtifactRepository), which may be another store.
        source, model_id = model.artifact_location, model.model_id
    else:
        source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
        model_id = None
    with redacted_stdout():
        version = client.create_model_version(name, source, run_id=run_id, model_id=model_id)
    return str(version.version)


# MLflow 3's UI opens an experiment in its GenAI (traces) view unless this tag says it is model
# training; ours always are, so the UI lands on the runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def get_or_create_experiment(client: Any, name: str, uri: str) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if "mlflow.experimentKind" not in existing.tags:
            client.set_experiment_tag(existing.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return str(existing.experiment_id)
    try:
        return str(
            client.create_experiment(name, default_artifact_location(uri), tags=EXPERIMENT_KIND)
        )
    except Exception:  # another worker created it between our two calls
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return str(existing.experiment_id)


def reopen(client: Any, run_id: str, tags: Mapping[str, str]) -> None:
    """A resumed run (``mltrack.tracking.resume``) back to RUNNING under this process: its identity
    and heartbeat ``tags``, and ``mltrack.resumed`` counting its resumptions."""
    from mlflow.entities import RunTag

    count = int(client.get_run(run_id).data.tags.get("mltrack.resumed", "0")) + 1
    keep = {k: v for k, v in tags.items() if not k.startswith("mlflow.")}  # its source stays
    items = [RunTag(k, v) for k, v in {**keep, "mltrack.resumed": str(count)}.items()]
    client.log_batch(run_id, tags=items)
    client.update_run(run_id, status="RUNNING")
