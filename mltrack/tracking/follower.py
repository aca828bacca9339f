"""The run as the ranks other than 0 of a distributed job see it (``mltrack.tracking.distributed``).

A ``Follower`` has every verb of ``mltrack.tracking.run.Run`` and the run's id, and writes nothing:
no store, no journal, no thread. Its outcome logic is the run's own (a stop decision, the
exception that ended the block), so the framework hooks behave on every rank alike; the job's
records reach the store through rank 0 alone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mltrack.tracking import distributed
from mltrack.tracking.process import sigterm_as_exception
from mltrack.tracking.run import Run


class Follower(Run):
    """A rank's handle on the job's run, owned by rank 0: every write is dropped."""

    is_rank_zero = False

    def __init__(self, run_id: str, experiment_id: str, tracking_uri: str) -> None:
        # Not Run.__init__: no client, journal or sink on these ranks.
        self._client = None
        self.run_id, self.experiment_id, self.tracking_uri = run_id, experiment_id, tracking_uri
        self._lock = threading.Lock()
        self._outcome, self._error = "completed", ""
        self._details: dict[str, str] = {}
        self._latest = {}
        self.refused = ""
        self._first_loss = None
        self.epoch_hooks = []
        self.before_finish = []
        self.first_epoch = 0
        self.checkpoint = False
        self.monitor = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def end_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        pass  # epoch hooks (a sweep's pruner) decide on rank 0; the loop passes it on

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_inputs(self, datasets: Sequence[tuple[str, Any]]) -> None:
        pass

    def log_model(self, folder: Path, name: str = "model") -> None:
        pass

    def register_model(self, name: str, artifact_path: str = "model") -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        pass

    def flush(self, timeout_s: float | None = None) -> bool:
        return True

    def finish(self) -> None:
        pass

    def detach(self) -> None:
        pass


@contextlib.contextmanager
def following(parent: Run | None) -> Iterator[Run]:
    """``mltrack.start_run`` on a rank other than 0: the job's run id from rank 0, a
    ``Follower``; this rank's failure is left for rank 0 to name in the run's error."""
    run_id, _, first_epoch = distributed.join("")
    run = Follower(run_id, parent.experiment_id if parent else "", "")
    run.first_epoch = first_epoch  # a resumed job's ranks all go on from rank 0's epoch
    try:
        with sigterm_as_exception(unless_handled=True):
            yield run
    except BaseException as exc:
        run._ended_by(exc)
        if run.outcome != "killed":  # stopped by the launcher (Ctrl-C) is no failure of ours
            distributed.report_failure(run.error or type(exc).__name__)
        raise
