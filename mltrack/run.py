"""The MLflow run lifecycle, and the only code that writes to the tracking store.

``start_run`` opens a run; whatever happens inside the ``with`` block, the run leaves RUNNING
with the status its outcome maps to in ``STATUS`` (``mltrack.outcomes``), the one table every
path uses (a plain run, a study's children and parent, a sweep's trials, compare's report run):

=================================================  ==========  ===========
what happened                                      ``outcome``  status
=================================================  ==========  ===========
the block finished                                 completed   FINISHED
a stop decision: the loss went NaN/Inf             diverged    FAILED
a stop decision: a sweep's pruner                  pruned      KILLED
out of memory (MemoryError, CUDA/TF OOM)           infeasible  FAILED
any other exception                                failed      FAILED
Ctrl-C or SIGTERM                                  killed      KILLED
=================================================  ==========  ===========

A stop decision (``Run.stop``) is not an exception: the framework hooks see ``run.stopping``
and end training after the current step or epoch, the experiment skips export, and the run
ends with the outcome's status.

Callers only use the verbs of ``Run`` (params, tags, metrics, artifacts, text, figures, stop);
nothing else touches an ``MlflowClient`` to write. Everything a run logs goes through its
writer (``mltrack.sink``) and its journal (``mltrack.spool``): no call waits for the store,
and nothing is lost while the store is away or when the process dies. Values pass through
``mltrack.limits`` (MLflow's limits, secrets and credentials in URIs redacted).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mltrack import distributed, limits, records
from mltrack.environment import software_tags
from mltrack.outcomes import STATUS, describe, outcome_of
from mltrack.process import HEARTBEAT_TAG, process_tags, sigterm_as_exception, sigterm_deferred
from mltrack.records import Artifact, Inputs, Model, Point, Record, Register, Values, encode
from mltrack.sink import Sink
from mltrack.spool import Journal, spool_dir
from mltrack.uris import resolve_tracking_uri
from mltrack.warmup import STORES, Stores

log = logging.getLogger(__name__)

# How long a run's end waits for the store to take what is still queued (then: the journal).
END_TIMEOUT_S = float(os.environ.get("MLTRACK_END_TIMEOUT_S", "60"))
HEARTBEAT_INTERVAL_S = 30.0

EpochHook = Callable[[int, Mapping[str, float]], None]


def _client(tracking_uri: str, stores: Stores | None = None) -> Any:
    return (stores or STORES).client(tracking_uri)


class Run:
    """One open MLflow run: the small interface every framework hook and command talks to."""

    is_rank_zero = True  # the process that writes (``mltrack.follower``: the other ranks)

    @classmethod
    def attach(cls, run_id: str, tracking_uri: str) -> Run:
        """A handle on an existing run (a sweep's parent opened by another worker)."""
        client = _client(tracking_uri)
        return cls(client, run_id, client.get_run(run_id).info.experiment_id, tracking_uri)

    def __init__(self, client: Any, run_id: str, experiment_id: str, tracking_uri: str) -> None:
        self._client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.tracking_uri = tracking_uri
        # How the run ends: decided once, by ``stop`` or by the exception that ended the block;
        # read by the training thread, Keras' batch thread and a sweep's pruner alike.
        self._lock = threading.Lock()
        self._outcome = "completed"
        self._error = ""
        self._details: dict[str, str] = {}
        self._latest: dict[str, Point] = {}  # each metric's last point: what a model links to
        self.refused = ""  # why the store refused the run for good, once it did (``finish``)
        self._first_loss: float | None = None  # the first epoch's training loss
        self.epoch_hooks: list[EpochHook] = []
        self.before_finish: list[Callable[[], None]] = []  # e.g. end a child left open
        self.first_epoch = 0  # the epoch training starts at: > 0 for a resumed run
        self.checkpoint = False  # keep a training checkpoint each epoch (mltrack.resume)
        self.monitor: Any = None  # MLflow's SystemMetricsMonitor, when asked for
        self.journal = Journal(spool_dir(), run_id, tracking_uri)
        self.sink = Sink(
            self._deliver,
            journal=lambda batch: self.journal.append(encode(r) for r in batch),
            heartbeat=self._heartbeat,
            heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
            refusal=records.refusal,
        )

    # -- verbs ------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        if params:
            self.sink.put([Values("params", tuple(limits.params(params).items()))])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            self.sink.put([Values("tags", tuple(limits.tags(tags).items()))])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue metrics; never waits for the store."""
        self._latest.update((p.key, p) for p in self.sink.log_many(metrics, step))

    def end_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log an epoch's metrics (step = epoch) and send them now, then run the epoch hooks.

        From the second epoch on, ``loss_change`` is logged too: the training loss's change
        since the first epoch, relative to it (``mltrack.report.not_training`` reads it).
        """
        loss = metrics.get("loss")
        if loss is not None and math.isfinite(loss):
            if self._first_loss is None:
                self._first_loss = loss
            elif self._first_loss:
                metrics = {
                    **metrics,
                    "loss_change": (loss - self._first_loss) / abs(self._first_loss),
                }
        self._latest.update((p.key, p) for p in self.sink.log_many(metrics, epoch, kick=True))
        for hook in self.epoch_hooks:
            hook(epoch, metrics)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy a file under the run's artifact root (``artifact_path`` may not leave it).

        The journal keeps its own copy until the store has it, so the caller may delete
        ``path`` as soon as this returns.
        """
        if artifact_path and (
            Path(artifact_path).is_absolute() or ".." in Path(artifact_path).parts
        ):
            raise ValueError(
                f"artifact_path {artifact_path!r} must stay inside the run's "
                "artifact root (relative, no '..')"
            )
        kept = self.journal.keep_file(Path(path), artifact_path)
        self.sink.put([Artifact(str(kept), artifact_path or None)])

    def log_inputs(self, datasets: Sequence[tuple[str, Any]]) -> None:
        """MLflow dataset inputs: (context such as ``training``, an ``mlflow.data`` dataset)."""
        fields = tuple(
            (context, tuple((k, str(v)) for k, v in dataset.to_dict().items() if v is not None))
            for context, dataset in datasets
        )
        if fields:
            self.sink.put([Inputs(fields)])

    def log_model(self, folder: Path, name: str = "model") -> None:
        """The MLflow model in ``folder`` as the run's MLflow 3 logged model ``name``, linked to
        the metrics' latest values logged so far (call it after the final metrics). The journal
        keeps a copy, so the caller may delete ``folder`` once this returns."""
        kept = self.journal.keep_folder(Path(folder))
        self.sink.put([Model(name, str(kept), tuple(self._latest.values()))])

    def register_model(self, name: str, artifact_path: str = "model") -> None:
        """Register the run's logged model ``artifact_path`` as a new version of ``name``,
        once the store has it (records are delivered in order)."""
        self.sink.put([Register(name, artifact_path)])

    def log_text(self, text: str, artifact_file: str) -> None:
        self._log_file(artifact_file, lambda target: target.write_text(limits.redact_uri(text)))

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure as a PNG artifact."""
        self._log_file(artifact_file, lambda target: figure.savefig(target, dpi=100))

    def _log_file(self, artifact_file: str, write: Callable[[Path], Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(artifact_file).name
            write(target)
            folder = str(Path(artifact_file).parent)
            self.log_artifact(target, None if folder == "." else folder)

    def stop(self, outcome: str, error: str = "", **details: Any) -> bool:
        """A stop decision: training ends after this step or epoch; the first decision stands.

        Safe from any thread. ``details`` become tags ``<outcome>_<name>`` (``diverged_step``,
        ...). Returns whether this call decided (False: an earlier decision stands).
        ``ValueError`` for an outcome that is not a stop (``completed``, or not in ``STATUS``).
        """
        if outcome not in STATUS or outcome == "completed":
            raise ValueError(f"outcome: got {outcome!r}, expected one of {', '.join(STATUS)}")
        with self._lock:
            if self._outcome != "completed":
                return False
            self._outcome, self._error = outcome, error
            self._details = {f"{outcome}_{k}": str(v) for k, v in details.items()}
        self.set_tags(self._details)
        return True

    def _ended_by(self, exc: BaseException, peer_failure: str = "") -> None:
        """An exception overrides an earlier stop decision: it is what ended the run; in a
        distributed job, another rank's failure (``peer_failure``) is what ended it."""
        with self._lock:
            self._outcome = "failed" if peer_failure else outcome_of(exc)
            killed = self._outcome == "killed"
            self._error = peer_failure or (type(exc).__name__ if killed else describe(exc))

    @property
    def outcome(self) -> str:
        """``completed`` until a stop decision or an exception; then that outcome."""
        return self._outcome

    @property
    def error(self) -> str:
        """Why the run failed or was stopped, if it was ("" otherwise)."""
        return self._error

    @property
    def stop_details(self) -> dict[str, str]:
        """The tags the stop decision set (``diverged_epoch``, ...)."""
        return dict(self._details)

    @property
    def latest(self) -> dict[str, float]:
        """Each metric's last logged value (what the store shows as the run's metrics)."""
        return {key: point.value for key, point in self._latest.items()}

    @property
    def stopping(self) -> bool:
        return self._outcome != "completed"

    def flush(self, timeout_s: float | None = END_TIMEOUT_S) -> bool:
        return self.sink.flush(timeout_s)

    def finish(self) -> None:
        """End the run with its outcome's status once the store has everything, else journal it.

        Waits at most ``END_TIMEOUT_S`` (``MLTRACK_END_TIMEOUT_S``) for the store.
        """
        for close in self.before_finish:
            close()
        status = STATUS[self.outcome]
        if self.monitor is not None:
            self.monitor.finish()
        self.set_tags({"outcome": self.outcome, **({"error": self.error} if self.error else {})})
        reason = "the store did not take everything in time"
        if self.sink.close(END_TIMEOUT_S):
            try:
                with limits.redacted_stdout():
                    self._client.set_terminated(self.run_id, status=status)
                self.journal.delete()
                return
            except Exception as exc:
                reason = limits.redact_uri(str(exc).splitlines()[0][:200] if str(exc) else "")
                self.refused = records.refusal(exc)
        self.refused = self.refused or self.sink.refused
        try:
            self.journal.append([{"type": "end", "status": status}])
        except OSError as exc:
            log.error("run %s: could not journal its end (%s): it stays RUNNING", self.run_id, exc)
            return
        if self.refused:
            records.REFUSED[self.run_id] = self.refused
            run, why, path = self.run_id, self.refused, self.journal.path
            log.error(
                "run %s: the store refuses it for good (%s); everything it logged is kept in "
                "%s: restore it in MLflow and run `mltrack sync` (which says how), or drop the "
                "records with `mltrack sync --discard %s`", run, why, path, run
            )  # fmt: skip
            return
        where = limits.redact_uri(self.tracking_uri)
        log.error(
            "run %s could not be ended on %s (%s); everything it logged is in %s: run "
            "`mltrack sync` when the store is back", self.run_id, where, reason, self.journal.path
        )  # fmt: skip

    def detach(self) -> None:
        """Stop writing to a run without ending it (a sweep's parent, shared with others)."""
        if self.sink.close(END_TIMEOUT_S):
            self.journal.delete()
        else:  # `mltrack sync` delivers the rest and leaves the run's status alone
            self.journal.append([{"type": "detach"}])

    # -- the writer's side ------------------------------------------------------------------
    def _deliver(self, unit: list[Record]) -> None:
        records.deliver(self._client, self.run_id, unit)

    def _heartbeat(self) -> None:
        self._client.set_tag(self.run_id, HEARTBEAT_TAG, str(int(time.time())))


def tag_run(tracking_uri: str, run_id: str, tags: Mapping[str, Any]) -> None:
    """Tag a run this process does not hold open (a sweep marks its best trial's run)."""
    from mlflow.entities import RunTag

    items = [RunTag(k, v) for k, v in limits.tags(tags).items()]
    _client(tracking_uri).log_batch(run_id, tags=items)


def tag_experiment(tracking_uri: str, experiment_id: str, key: str, value: str) -> None:
    """Set one experiment tag (``mltrack ui``'s saved runs-table view)."""
    _client(tracking_uri).set_experiment_tag(experiment_id, key, value)


def end_orphan(tracking_uri: str, run_id: str, error: str) -> bool:
    """End a RUNNING run whose process died (doctor, a sweep's stale trial) as FAILED.

    Returns False, touching nothing, if the run has already left RUNNING.
    """
    client = _client(tracking_uri)
    if client.get_run(run_id).info.status != "RUNNING":
        return False
    tag_run(tracking_uri, run_id, {"outcome": "failed", "error": error})
    with limits.redacted_stdout():
        client.set_terminated(run_id, STATUS["failed"])
    return True


@contextlib.contextmanager
def start_run(
    experiment: str,
    *,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    parent: Run | None = None,
    system_metrics_interval: float = 0.0,
    stores: Stores | None = None,
    resume: str = "",
) -> Iterator[Run]:
    """Open a run (a child of ``parent`` if given) and end it with its true status; with
    ``resume``, continue that run (``mltrack.resume``: its epochs go on, ``run.first_epoch``).

    ``system_metrics_interval`` > 0 starts MLflow's own system-metrics monitor for the run
    (``system/*`` metrics every that many seconds); it stops before the run ends. ``stores``:
    the registry of clients and probes (``mltrack.warmup``; default: the process's).
    """
    here = distributed.world()
    if not here.is_rank_zero:  # the job's run is rank 0's; this rank only learns its id
        from mltrack.follower import following

        with following(parent) as follower:
            yield follower
        return
    stores = stores or STORES
    uri = resolve_tracking_uri(tracking_uri or (parent.tracking_uri if parent else None))
    prepared = stores.tracking(uri, experiment)  # begun while the framework loaded, if at all
    client = parent._client if parent else stores.client(uri)
    find = records.get_or_create_experiment
    first_epoch = 0
    if resume:
        from mltrack import resume as resuming

        experiment_id, first_epoch = resuming.check(client, resume, params or {})
    else:
        experiment_id = parent.experiment_id if parent else find(client, experiment, uri)
    base_tags = {
        **process_tags(),
        "mlflow.source.name": Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python",
        "mlflow.source.type": "LOCAL",
        "mlflow.user": getpass.getuser(),
        **prepared.tags,
        **software_tags(),  # now: it reads the CUDA versions of the frameworks loaded by now
    }
    if parent is not None:
        base_tags["mlflow.parentRunId"] = parent.run_id
    if resume:
        records.reopen(client, resume, limits.tags(base_tags))
    else:
        made = client.create_run(experiment_id, run_name=run_name, tags=limits.tags(base_tags))
    run = Run(client, resume or made.info.run_id, experiment_id, uri)
    run.first_epoch = first_epoch
    if system_metrics_interval > 0:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        every = system_metrics_interval
        run.monitor = SystemMetricsMonitor(run.run_id, sampling_interval=every, tracking_uri=uri)
        run.monitor.start()
    try:
        if here.distributed:  # every rank learns the id; rank 0 records the job's shape
            job = distributed.join(run.run_id, run.first_epoch)[1]
            tags, params = {**job["tags"], **(tags or {})}, {**job["params"], **(params or {})}
        run.set_tags(tags or {})
        run.log_params(params or {})
        with sigterm_as_exception(unless_handled=True):
            yield run
    except BaseException as exc:
        with sigterm_deferred():
            run._ended_by(exc, distributed.peer_failure(exc) if here.distributed else "")
        raise
    finally:
        with sigterm_deferred():  # the run ends with its status, a launcher's SIGTERM or not
            run.finish()
