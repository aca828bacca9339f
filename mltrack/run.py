"""The MLflow run lifecycle: open, record, and always end with the true status.

``start_run`` is the only place a run is created or ended. Whatever happens inside the ``with``
block, the run leaves RUNNING with the status that tells what happened:

=================================  ==========  ===========
what happened                      status      ``outcome``
=================================  ==========  ===========
block finished                     FINISHED    completed
training diverged (NaN/Inf loss)   FINISHED    diverged
a sweep pruned it (RunPruned)      KILLED      pruned
a sweep stopped it (RunDiverged)   FAILED      diverged
an exception                       FAILED      failed
Ctrl-C or SIGTERM                  KILLED      killed
=================================  ==========  ===========

MLflow's limits are handled here and nowhere else: param values are cut to 6000 characters
with a warning, params and tags go 100 per call, metric names are cleaned by the sink, and
values of secret-looking keys are never sent.

When the store goes away mid-run (a tracking server restarting), training goes on: metrics
and tags wait in memory and in a local spool (``spool_dir()``), reach the store when it is
back, and a run that could not even be ended there is finished by ``mltrack sync``. Every run
carries its host, process and a heartbeat tag, so ``mltrack doctor`` can end the runs whose
process died without ending them.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from mltrack import spool
from mltrack.environment import detect_hardware, git_tags, hardware_tags, software_tags
from mltrack.errors import Terminated
from mltrack.sink import MetricSink, Point

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
MAX_PARAM_VAL_LENGTH = 6000  # mlflow.utils.validation
MAX_TAG_VAL_LENGTH = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
FLUSH_TIMEOUT_S = 60.0
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_?key|credential|(^|[_.])key$)", re.I)
REDACTED = "<redacted>"

EpochHook = Callable[[int, Mapping[str, float]], None]


class RunPruned(Exception):
    """Raised by an epoch hook (a sweep's pruner) to stop a run early as ``pruned``."""


class RunDiverged(Exception):
    """Raised by a sweep's epoch hook so a diverged trial ends FAILED, as Optuna records it."""


HOST_TAG, PID_TAG, PID_START_TAG = "mltrack.host", "mltrack.pid", "mltrack.pid_start"
HEARTBEAT_TAG = "mltrack.heartbeat"
HEARTBEAT_INTERVAL_S = 30.0


def spool_dir() -> Path:
    """Local disk where metrics wait while the store is unreachable (``MLTRACK_SPOOL_DIR``)."""
    return Path(os.environ.get("MLTRACK_SPOOL_DIR") or Path.home() / ".cache/mltrack/spool")


def process_tags() -> dict[str, str]:
    import psutil

    me = psutil.Process()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(me.pid),
        PID_START_TAG: f"{me.create_time():.2f}",
        HEARTBEAT_TAG: str(int(time.time())),
    }


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``--tracking-uri`` over ``MLFLOW_TRACKING_URI`` over the embedded sqlite store."""
    resolved = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    db = sqlite_path(resolved)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return resolved


def sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def default_artifact_location(uri: str) -> str | None:
    """Artifacts of an sqlite store live beside the database (``mlruns/artifacts``).

    A tracking server decides for itself (proxied artifacts), so nothing is set there.
    """
    db = sqlite_path(uri)
    return (db.parent.resolve() / "artifacts").as_uri() if db is not None else None


def is_secret(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; values become strings; secrets are redacted."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif is_secret(name) and value not in (None, ""):
            out[name] = REDACTED
        else:
            out[name] = "" if value is None else str(value)
    return out


def _cut(key: str, value: str, limit: int, kind: str) -> str:
    if len(value) <= limit:
        return value
    log.warning("%s %r is %d characters; MLflow keeps %d, cut", kind, key, len(value), limit)
    return value[: limit - 3] + "..."


class Run:
    """One open MLflow run: the small interface every framework hook talks to."""

    @classmethod
    def attach(cls, run_id: str, tracking_uri: str) -> Run:
        """A handle on an existing run (a sweep's parent opened by another worker)."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        return cls(client, run_id, client.get_run(run_id).info.experiment_id, tracking_uri)

    def __init__(self, client: Any, run_id: str, experiment_id: str, tracking_uri: str) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.tracking_uri = tracking_uri
        self.outcome = "completed"
        self.epoch_hooks: list[EpochHook] = []
        self.spool = spool_dir() / f"{run_id}.jsonl"
        self._spool_header = {"run_id": run_id, "tracking_uri": tracking_uri}
        self.sink = MetricSink(
            self._write_points,
            spool=self.spool,
            spool_header=self._spool_header,
            heartbeat=self._heartbeat,
            heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
        )

    def _heartbeat(self) -> None:
        self.client.set_tag(self.run_id, HEARTBEAT_TAG, str(int(time.time())))

    def _spool_record(self, record: dict[str, Any]) -> None:
        """Keep a tag update or the run's end on local disk for ``mltrack sync``."""
        spool.append(self.spool, self._spool_header, [record])

    def _write_points(self, points: list[Point]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(p.key, p.value, p.timestamp_ms, p.step) for p in points]
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, _cut(k, v, MAX_PARAM_VAL_LENGTH, "param")) for k, v in flat.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags now; if the store is away, spool them instead of failing the training."""
        from mlflow.entities import RunTag

        flat = {k: _cut(k, v, MAX_TAG_VAL_LENGTH, "tag") for k, v in flatten(tags).items()}
        items = [RunTag(k, v) for k, v in flat.items()]
        try:
            for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
                self.client.log_batch(self.run_id, tags=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])
        except Exception as exc:
            log.warning(
                "tags kept in %s for `mltrack sync`: store unavailable (%s)",
                self.spool,
                str(exc).splitlines()[0][:200],
            )
            self._spool_record({"type": "tags", "tags": flat})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue metrics; never waits for the store."""
        self.sink.log_many(metrics, step)

    def end_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log an epoch's metrics (step = epoch), start their flush, then run epoch hooks."""
        self.sink.log_many(metrics, epoch)
        for hook in self.epoch_hooks:
            hook(epoch, metrics)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy a file under the run's artifact root (``artifact_path`` may not leave it)."""
        if artifact_path and (
            Path(artifact_path).is_absolute() or ".." in Path(artifact_path).parts
        ):
            raise ValueError(
                f"artifact_path {artifact_path!r} must stay inside the run's "
                "artifact root (relative, no '..')"
            )
        try:
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        except Exception as exc:  # the store is away: keep a copy for `mltrack sync`
            kept = spool.keep_file(self.spool, path, artifact_path)
            log.warning(
                "artifact %s kept in %s for `mltrack sync`: store unavailable (%s)",
                path.name,
                kept,
                str(exc).splitlines()[0][:200],
            )
            self._spool_record(
                {"type": "artifact", "file": str(kept), "artifact_path": artifact_path}
            )

    def log_text(self, text: str, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(artifact_file).name
            target.write_text(text)
            parent = str(Path(artifact_file).parent)
            self.log_artifact(target, None if parent == "." else parent)

    def mark_diverged(self, epoch: int, step: int, loss: float) -> None:
        self.outcome = "diverged"
        self.set_tags({"diverged_epoch": epoch, "diverged_step": step, "diverged_loss": loss})

    def flush(self, timeout_s: float | None = FLUSH_TIMEOUT_S) -> bool:
        return self.sink.flush(timeout_s)

    def _end(self, status: str, outcome: str, error: str | None) -> None:
        left = self.sink.close(FLUSH_TIMEOUT_S)  # what it could not send is in the spool
        tags = {"outcome": outcome, **({"error": error} if error else {})}
        try:
            if left or self.spool.exists():  # the store may be back: deliver the spool first
                spool.replay(self.spool, self.client)
            self.set_tags(tags)
            if self.spool.exists():  # tags were spooled: the end must wait for them too
                raise ConnectionError("tags still undelivered")
            self.client.set_terminated(self.run_id, status=status)
        except Exception as exc:
            self._spool_record({"type": "end", "status": status, "tags": tags})
            log.error(
                "run %s could not be ended on %s (%s); its data is in %s: run "
                "`mltrack sync` when the store is back",
                self.run_id,
                self.tracking_uri,
                exc,
                self.spool,
            )


# MLflow 3's UI opens an experiment in its GenAI (traces) view unless this tag says it is model
# training; ours always are, so the UI lands on the runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _get_or_create_experiment(client: Any, name: str, uri: str) -> str:
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


@contextlib.contextmanager
def start_run(
    experiment: str,
    *,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    parent: Run | None = None,
) -> Iterator[Run]:
    """Open a run (a child of ``parent`` if given) and end it with its true status."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri or (parent.tracking_uri if parent else None))
    client = parent.client if parent else MlflowClient(tracking_uri=uri)
    experiment_id = (
        parent.experiment_id if parent else _get_or_create_experiment(client, experiment, uri)
    )
    base_tags = {
        **process_tags(),
        "mlflow.source.name": Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python",
        "mlflow.source.type": "LOCAL",
        "mlflow.user": getpass.getuser(),
        **hardware_tags(detect_hardware()),
        **software_tags(),
        **git_tags(),
    }
    if parent is not None:
        base_tags["mlflow.parentRunId"] = parent.run_id
    created = client.create_run(experiment_id, run_name=run_name, tags=flatten(base_tags))
    run = Run(client, created.info.run_id, experiment_id, uri)
    status, outcome, error = "FINISHED", "completed", None
    try:
        run.set_tags(tags or {})
        run.log_params(params or {})
        yield run
        outcome = run.outcome
    except RunPruned:
        status, outcome = "KILLED", "pruned"
        raise
    except RunDiverged:
        status, outcome = "FAILED", "diverged"
        raise
    except (KeyboardInterrupt, Terminated) as exc:
        status, outcome, error = "KILLED", "killed", type(exc).__name__
        raise
    except BaseException as exc:
        status, outcome, error = "FAILED", "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        run._end(status, outcome, error)


@contextlib.contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """Turn SIGTERM into a ``Terminated`` exception in the main thread, so runs end KILLED."""

    def handler(signum: int, frame: FrameType | None) -> None:
        # Ignore further SIGTERMs while we unwind and close the runs.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
