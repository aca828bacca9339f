"""The run lifecycle: ``start_run`` and ``Run``, whose records the writer process delivers.

``start_run`` opens a run; whatever happens inside the ``with`` block, the run leaves RUNNING
with the status its outcome maps to in ``STATUS`` (``mltrack.tracking.outcomes``), the one table
every path uses (a plain run, a study's children and parent, a sweep's trials, compare's report
run):

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

Callers only use the verbs of ``Run`` (params, tags, metrics, artifacts, text, figures, stop).
Everything a run logs goes to its journal (``mltrack.tracking.sink``, ``mltrack.tracking.spool``),
and the writer process (``mltrack.tracking.writer``) delivers it: this process never imports MLflow
nor waits for a store, and nothing is lost while the store is away or when the process dies.
``start_run`` waits only for the writer's first answer (the run made, bad input refused, or the
store away: then the run's id is its journal key until it reaches the store), and a run's end waits
for its delivery at most ``END_TIMEOUT_S``. Values pass through ``mltrack.tracking.limits``
(MLflow's limits, secrets and credentials in URIs redacted).
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
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mltrack.measure.environment import software_tags
from mltrack.tracking import distributed, limits, records, spool, writer
from mltrack.tracking.outcomes import STATUS, describe, outcome_of
from mltrack.tracking.process import process_tags, sigterm_as_exception, sigterm_deferred
from mltrack.tracking.records import Artifact, Inputs, Model, Point, Register, Values, encode
from mltrack.tracking.sink import Sink
from mltrack.tracking.spool import Journal, ack_path, spool_dir
from mltrack.tracking.uris import resolve_tracking_uri
from mltrack.tracking.warmup import PROBES

log = logging.getLogger(__name__)

# How long a run's end waits for the writer to deliver what is journaled (it goes on after).
END_TIMEOUT_S = float(os.environ.get("MLTRACK_END_TIMEOUT_S", "60"))
# How long a run's start waits for the writer's first answer (its start-up is about 2 s).
CREATE_TIMEOUT_S = float(os.environ.get("MLTRACK_CREATE_TIMEOUT_S", "60"))
# ``--offline``: journal without trying the store (``mltrack sync`` delivers later).
OFFLINE_ENV = "MLTRACK_OFFLINE"

EpochHook = Callable[[int, Mapping[str, float]], None]


class Run:
    """One open MLflow run: the small interface every framework hook and command talks to."""

    is_rank_zero = True  # the process that writes (``mltrack.tracking.follower``: the other ranks)

    @classmethod
    def attach(cls, run_id: str, tracking_uri: str, experiment_id: str = "") -> Run:
        """A handle on an existing run (a sweep's parent opened by another worker)."""
        run = cls(Journal(spool_dir(), uuid.uuid4().hex, tracking_uri, run_id=run_id))
        run.experiment_id = experiment_id
        return run

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.key = str(journal.header["key"])  # this process's id of the run
        self._run_id = str(journal.header["run_id"])  # MLflow's, once the writer made the run
        self.experiment_id = ""
        self.experiment_name = ""
        self.tracking_uri = str(journal.header["tracking_uri"])
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
        self.checkpoint = False  # keep a training checkpoint each epoch (mltrack.tracking.resume)
        self.offline = False  # journaled for `mltrack sync`, no writer (``--offline``)
        self.sink = Sink(lambda batch: self.journal.append(encode(r) for r in batch))

    @property
    def run_id(self) -> str:
        """MLflow's id of the run: waits for the writer to make it the first time it is
        read (``writer.opened``); the journal's key while the store is away."""
        if not self._run_id:
            writer.opened(self, self.tracking_uri, CREATE_TIMEOUT_S)
        return self._run_id or self.key

    @run_id.setter
    def run_id(self, value: str) -> None:
        self._run_id = value

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
        since the first epoch, relative to it (``mltrack.compare.report.not_training`` reads it).
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
        """Wait until everything logged so far is journaled (on local disk)."""
        return self.sink.flush(timeout_s)

    def finish(self) -> None:
        """End the run with its outcome's status: journal the end, then wait at most
        ``END_TIMEOUT_S`` (``MLTRACK_END_TIMEOUT_S``) for the writer to deliver it all. One
        line says where the run is when it is not in the store by then."""
        for close in self.before_finish:
            close()
        if self.sink.error:  # the disk refused the journal: what is kept is what the store got
            self.stop("failed", f"could not journal to {self.journal.path.parent}: "
                      f"{self.sink.error}")  # fmt: skip
        status = STATUS[self.outcome]
        self.set_tags({"outcome": self.outcome, **({"error": self.error} if self.error else {})})
        self._close({"type": "end", "status": status})

    def detach(self) -> None:
        """Stop writing to a run without ending it (a sweep's parent, shared with others)."""
        self._close({"type": "detach"})

    def _close(self, last: dict[str, str]) -> None:
        from mltrack.tracking.courier import AWAY, BAD, DONE, REFUSED

        journaled = self.sink.close(END_TIMEOUT_S)
        try:
            self.journal.append([last])
        except OSError as exc:
            journaled, why = False, f"{exc.strerror or exc}"
            if last["type"] == "end":  # the writer ends it, told through its stdin
                writer.tell_end(self.journal.path, self.outcome, self.error)
        else:
            why = self.sink.error
        run_id = self._run_id or self.key
        if not journaled:
            log.error(
                "run %s: could not journal everything to %s (%s); it ends %s with what the "
                "writer delivered before", run_id, self.journal.path.parent, why,
                STATUS[self.outcome],
            )  # fmt: skip
            if last["type"] == "end":
                return
        if self.offline:
            where = limits.redact_uri(self.tracking_uri)
            log.warning("run %s is journaled in %s (offline): `mltrack sync` delivers it to %s",
                        run_id, self.journal.path, where)  # fmt: skip
            return
        ack = writer.wait(
            self.journal.path, (AWAY, REFUSED, BAD), END_TIMEOUT_S, self.journal.lines
        )
        self._run_id = str(ack.get("run_id") or self._run_id)
        run_id = self._run_id or self.key  # never waits: the writer had its chance above
        state = ack.get("state")
        if state == DONE:
            ack_path(self.journal.path).unlink(missing_ok=True)
            return
        if state in (REFUSED, BAD):  # BAD: its creation refused after the store's check
            records.REFUSED[run_id] = self.refused = str(ack.get("reason", ""))
        spool.say_where(run_id, ack, self.journal.path, self.tracking_uri, END_TIMEOUT_S)


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
    resume: str = "",
    offline: bool | None = None,
) -> Iterator[Run]:
    """Open a run (a child of ``parent`` if given) and end it with its true status; with
    ``resume``, continue that run (``mltrack.tracking.resume``: its epochs go on,
    ``run.first_epoch``).

    The run is made by the writer process (``mltrack.tracking.writer``); this waits for its first
    answer only: ``UsageError`` if the store refuses it as bad input (a deleted experiment,
    credentials refused, a database MLflow will not open), and one line if the store is away
    (training goes on, journaled). ``offline`` (default: ``MLTRACK_OFFLINE=1``) journals
    without trying the store. ``system_metrics_interval`` > 0 has the writer run MLflow's
    system-metrics monitor for the run (``system/*`` metrics every that many seconds).
    """
    here = distributed.world()
    if not here.is_rank_zero:  # the job's run is rank 0's; this rank only learns its id
        from mltrack.tracking.follower import following

        with following(parent) as follower:
            yield follower
        return
    uri = resolve_tracking_uri(tracking_uri or (parent.tracking_uri if parent else None))
    offline = is_offline() if offline is None else offline
    first_epoch = 0
    if resume:  # reads the run in the store: MLflow loads here, for --resume only
        from mltrack.tracking import resume as resuming
        from mltrack.tracking.warmup import STORES

        first_epoch = resuming.check(STORES.client(uri), resume, params or {})[1]
    base_tags = {
        **process_tags(),
        "mlflow.source.name": Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python",
        "mlflow.source.type": "LOCAL",
        "mlflow.user": getpass.getuser(),
        **PROBES.tags(),  # begun while the framework loaded, if at all
        **software_tags(),  # now: it reads the CUDA versions of the frameworks loaded by now
    }
    create: dict[str, Any] = {
        "type": "create",
        "experiment": experiment or (parent.experiment_name if parent else ""),
        "experiment_id": parent.experiment_id if parent else "",
        "run_name": run_name,
        "tags": limits.tags(base_tags),
        "system_metrics_interval": system_metrics_interval,
        "resume": bool(resume),
    }
    if parent is not None:  # its id once the store has it, else its key (the writer resolves)
        create["parent_run_id" if parent.run_id != parent.key else "parent_key"] = parent.run_id
    run = Run(Journal(spool_dir(), uuid.uuid4().hex, uri, run_id=resume))
    run.journal.append([create])
    run.first_epoch, run.offline = first_epoch, offline
    run.experiment_name = str(create["experiment"])
    if offline or not writer.checked(uri, run.experiment_name):  # else made while it trains
        writer.opened(run, uri, CREATE_TIMEOUT_S)
    else:
        writer.serve(run.journal.path)
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


def is_offline() -> bool:
    """Whether runs journal without trying the store (``MLTRACK_OFFLINE=1``, ``--offline``)."""
    return os.environ.get(OFFLINE_ENV, "") == "1"
