"""Start-up work a run needs, done while the framework and the data load; the stores' clients.

A training process talks to no store (``mltrack.tracking.writer`` does). What it still pays before
its first step is the probes that tag every run (hardware, the CPU's physical bound, git): none of
it needs TensorFlow, torch or the data, so ``Experiment.main`` calls ``PROBES.begin()`` once
the framework is imported and they run on a thread while the data loads; ``start_run`` takes
the result with ``PROBES.tags()`` (which probes itself if nothing was begun, as for runs from
code). Measured (2 cores): beside Keras' import such a thread cost 0.8 s more than importing
one after the other (two Python-heavy imports fight over the GIL and the import locks), so it
does not start earlier.

``Stores`` keeps one ``MlflowClient`` per tracking URI for the processes that do talk to MLflow
(the writer, ``mltrack sync``, sweeps, compare, ``mltrack ui``): the process's ``STORES`` unless
a caller passes its own.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from mltrack.errors import bad_value
from mltrack.measure.efficiency import bound_tags
from mltrack.measure.environment import detect_hardware, git_tags, hardware_tags
from mltrack.tracking.creation import open_once
from mltrack.tracking.uris import is_database, sqlite_path

EXIT_WAIT_S = 10.0


class Stores:
    """The ``MlflowClient`` of each tracking URI a process talks to, made once (creating one
    costs 0.1 s; a database store's is opened under ``creation.open_once``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
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
        store is left to the first run, which creates it: a command that fails on bad input
        leaves no store behind."""
        db = sqlite_path(tracking_uri)
        if db is None or db.exists():
            check_experiment(self.client(tracking_uri), experiment or "Default")
        else:
            import mlflow  # noqa: F401 - the import is most of the cost


class Probes:
    """The tags every run of this process carries (hardware, its bound, git), probed once:
    on a thread (``begin``) or on first use (``tags``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._tags: dict[str, str] | None = None
        self._error: BaseException | None = None

    def _probe(self) -> None:
        try:
            hardware = detect_hardware()
            self._tags = {**hardware_tags(hardware), **bound_tags(hardware), **git_tags()}
        except BaseException as exc:  # handed to the caller of ``tags``
            self._error = exc

    def begin(self) -> None:
        with self._lock:
            if self._thread is not None or self._tags is not None:
                return
            self._thread = threading.Thread(target=self._probe, name="mltrack-probes", daemon=True)
            self._thread.start()
            atexit.register(self._thread.join, EXIT_WAIT_S)

    def tags(self) -> dict[str, str]:
        self.begin()
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error
        return dict(self._tags or {})


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
PROBES = Probes()
