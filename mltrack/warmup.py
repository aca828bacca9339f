"""Start-up work that needs neither the framework nor the data, done while they load.

A tracked run's fixed cost is MLflow's import (about 1.5 s here), opening the store (its first
query; creating a new sqlite store's tables takes 2 s more) and the probes that tag every run
(hardware, the CPU's peak FLOP/s from the cache, git). None of it needs TensorFlow, torch or the
data, so ``Experiment.main`` calls ``Stores.begin`` once the framework is imported, and the work
runs on a thread while the main thread loads the data; ``start_run`` then takes the result with
``Stores.tracking`` (which does the work itself if nothing was begun, as for runs from code).
Measured (2 cores; numpy's loops release the GIL): beside data loading the thread saves
0.1-0.3 s; beside Keras' import it cost 0.8 s more than importing one after the other (two
Python-heavy imports fight over the GIL and the import locks), so it does not start earlier.

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

from mltrack.efficiency import peak_tags
from mltrack.environment import detect_hardware, git_tags, hardware_tags
from mltrack.uris import sqlite_path


@dataclass(frozen=True)
class Tracking:
    tags: dict[str, str]  # hardware, peaks and git: the same for every run of this process


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
        self._pending: dict[str, tuple[threading.Thread, list[Tracking | BaseException]]] = {}
        self._clients: dict[str, Any] = {}

    def client(self, tracking_uri: str) -> Any:
        """The ``MlflowClient`` of ``tracking_uri``, made once."""
        from mlflow import MlflowClient

        with self._lock:
            if tracking_uri not in self._clients:
                self._clients[tracking_uri] = MlflowClient(tracking_uri=tracking_uri)
            return self._clients[tracking_uri]

    def _prepare(self, tracking_uri: str, experiment: str) -> Tracking:
        db = sqlite_path(tracking_uri)
        if db is None or db.exists():
            # Open the store now. A new embedded store is left to start_run, which creates it
            # once the data loaded: a command that fails on bad input leaves no store behind.
            self.client(tracking_uri).get_experiment_by_name(experiment or "Default")
        else:
            import mlflow  # noqa: F401 - the import is most of the cost
        hardware = detect_hardware()
        return Tracking({**hardware_tags(hardware), **peak_tags(hardware), **git_tags()})

    def begin(self, tracking_uri: str, experiment: str = "") -> None:
        """Start preparing ``tracking_uri`` on a background thread (once per URI)."""
        with self._lock:
            if tracking_uri in self._ready or tracking_uri in self._pending:
                return
            box: list[Tracking | BaseException] = []

            def work() -> None:
                try:
                    box.append(self._prepare(tracking_uri, experiment))
                except BaseException as exc:  # handed to the main thread by tracking()
                    box.append(exc)

            thread = threading.Thread(target=work, name="mltrack-warmup", daemon=True)
            self._pending[tracking_uri] = (thread, box)
            thread.start()
            # A process that ends early (bad input) lets the thread finish its reads; a store
            # that does not answer does not hold the exit up for long.
            atexit.register(thread.join, EXIT_WAIT_S)

    def tracking(self, tracking_uri: str, experiment: str = "") -> Tracking:
        """The probes' tags for ``tracking_uri`` (its client, opened, is ``client``'s); raises
        what preparing it raised (an unreachable store, a bad URI) in the caller's thread."""
        with self._lock:
            if tracking_uri in self._ready:
                return self._ready[tracking_uri]
            pending = self._pending.pop(tracking_uri, None)
        if pending is None:
            prepared = self._prepare(tracking_uri, experiment)
        else:
            thread, box = pending
            thread.join()
            if isinstance(box[0], BaseException):
                raise box[0]
            prepared = box[0]
        with self._lock:
            return self._ready.setdefault(tracking_uri, prepared)


STORES = Stores()  # this process's
