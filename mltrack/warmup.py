"""Start-up work that needs neither the framework nor the data, done while they load.

A tracked run's fixed cost is MLflow's import (about 1.5 s here), opening the store (its first
query; creating a new sqlite store's tables takes 2 s more) and the probes that tag every run
(hardware, the CPU's physical bound, git). None of it needs TensorFlow, torch or the
data, so ``Experiment.main`` calls ``Stores.begin`` once the framework is imported and the work
runs on a thread. The main thread waits for its first part, the store (``Stores.opened``), so a
deleted experiment or an unreachable store is reported before any data loads; the probes then
run while the data loads, and ``start_run`` takes the result with ``Stores.tracking`` (which
does the work itself if nothing was begun, as for runs from code). Measured (2 cores): beside
Keras' import the thread cost 0.8 s more than importing one after the other (two Python-heavy
imports fight over the GIL and the import locks), so it does not start earlier.

Nothing is written here: an existing store is opened, a new one is left for ``start_run`` to
create, with the experiment and the run, once the data loaded, so bad input leaves nothing.

The result is kept per tracking URI in a ``Stores`` registry, the process's ``STORES`` unless a
caller passes its own: a study's runs, a sweep worker's trials and compare's report run share
one client and one set of probes.
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass
from typing import Any

from mltrack.creation import open_once
from mltrack.efficiency import bound_tags
from mltrack.environment import detect_hardware, git_tags, hardware_tags
from mltrack.errors import bad_value
from mltrack.uris import is_database, sqlite_path


@dataclass(frozen=True)
class Tracking:
    tags: dict[str, str]  # hardware, its bound and git: the same for every run of a process


EXIT_WAIT_S = 10.0


class Stores:
    """The clients and probe results of the stores one process talks to: one ``MlflowClient``
    per tracking URI (creating one costs 0.1 s), and each store's ``Tracking`` prepared once,
    on a thread (``begin``) or on first use (``tracking``). The process has one, ``STORES``;
    ``start_run``, ``mltrack sync``, sweeps and ``mltrack ui`` take it as an argument (a test
    passes its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, Tracking] = {}
        self._pending: dict[str, _Pending] = {}
        self._clients: dict[str, Any] = {}

    def client(self, tracking_uri: str) -> Any:
        """The ``MlflowClient`` of ``tracking_uri``, made once. A database store is opened
        here, under ``creation.open_once``: a new one is created by one process at a time."""
        from mlflow import MlflowClient

        with self._lock:
            if tracking_uri not in self._clients:
                # MlflowClient's constructor opens (and, if new, creates) a database store.
                self._clients[tracking_uri] = (
                    open_once(tracking_uri, lambda: MlflowClient(tracking_uri=tracking_uri))
                    if is_database(tracking_uri)
                    else MlflowClient(tracking_uri=tracking_uri)
                )
            return self._clients[tracking_uri]

    def open_existing(self, tracking_uri: str, experiment: str) -> None:
        """Open an existing store and check the experiment can take runs. A new embedded
        store is left to start_run, which creates it once the data loaded: a command that
        fails on bad input leaves no store behind."""
        db = sqlite_path(tracking_uri)
        if db is None or db.exists():
            check_experiment(self.client(tracking_uri), experiment or "Default")
        else:
            import mlflow  # noqa: F401 - the import is most of the cost

    def _probe(self) -> Tracking:
        hardware = detect_hardware()
        return Tracking({**hardware_tags(hardware), **bound_tags(hardware), **git_tags()})

    def begin(self, tracking_uri: str, experiment: str = "") -> None:
        """Start preparing ``tracking_uri`` on a background thread (once per URI): first the
        store (``opened`` waits for that part), then the probes."""
        with self._lock:
            if tracking_uri in self._ready or tracking_uri in self._pending:
                return
            pending = _Pending()

            def work() -> None:
                try:
                    self.open_existing(tracking_uri, experiment)
                except BaseException as exc:  # handed to the main thread by opened/tracking
                    pending.error = exc
                    return
                finally:
                    pending.opened.set()
                try:
                    pending.result = self._probe()
                except BaseException as exc:
                    pending.error = exc

            pending.thread = threading.Thread(target=work, name="mltrack-warmup", daemon=True)
            self._pending[tracking_uri] = pending
            pending.thread.start()
            # A process that ends early (bad input) lets the thread finish its reads; a store
            # that does not answer does not hold the exit up for long.
            atexit.register(pending.thread.join, EXIT_WAIT_S)

    def opened(self, tracking_uri: str) -> None:
        """Wait until ``begin``'s thread has opened the store; raise what opening raised (a
        deleted experiment, an unreachable store) in the caller's thread. Returns at once if
        nothing was begun."""
        with self._lock:
            pending = self._pending.get(tracking_uri)
        if pending is not None:
            pending.opened.wait()
            if pending.error is not None:
                raise pending.error

    def tracking(self, tracking_uri: str, experiment: str = "") -> Tracking:
        """The probes' tags for ``tracking_uri`` (its client, opened, is ``client``'s); raises
        what preparing it raised (an unreachable store, a bad URI) in the caller's thread."""
        with self._lock:
            if tracking_uri in self._ready:
                return self._ready[tracking_uri]
            pending = self._pending.pop(tracking_uri, None)
        if pending is None:
            self.open_existing(tracking_uri, experiment)
            prepared = self._probe()
        else:
            pending.thread.join()
            if pending.error is not None:
                raise pending.error
            assert pending.result is not None
            prepared = pending.result
        with self._lock:
            return self._ready.setdefault(tracking_uri, prepared)


class _Pending:
    """A ``begin`` in progress: its thread, whether the store is open, its result or error."""

    def __init__(self) -> None:
        self.thread = threading.Thread()
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self.result: Tracking | None = None


def check_experiment(client: Any, name: str) -> None:
    """``UsageError`` naming ``--experiment`` if the experiment ``name`` is deleted (MLflow
    refuses runs in it, and its name stays taken until it is restored or purged)."""
    refuse_deleted(client.get_experiment_by_name(name))


def refuse_deleted(found: Any) -> None:
    """``UsageError`` naming ``--experiment`` if ``found`` (an MLflow ``Experiment`` or
    ``None``) is deleted, with how to restore it."""
    if found is not None and found.lifecycle_stage == "deleted":
        raise bad_value(
            "--experiment",
            found.name,
            "an active experiment; this one is deleted: restore it with `mlflow experiments "
            f"restore --experiment-id {found.experiment_id}` or choose another name",
        )


STORES = Stores()  # this process's
