"""How a run ends: the outcome vocabulary, its MLflow status, and which runs count.

One table for every path (a plain run, a study's children and parent, a sweep's trials,
compare's report run); ``mltrack.tracking.run`` ends runs with it, ``mltrack.compare.report`` and
``mltrack.compare.command`` decide with ``averaged`` which runs' figures are averaged in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from mltrack.errors import Terminated

STATUS = {
    "completed": "FINISHED",
    "diverged": "FAILED",
    "pruned": "KILLED",
    "infeasible": "FAILED",
    "failed": "FAILED",
    "killed": "KILLED",
}
# A diverged run that trained all its epochs on NaN (``--protocol seed``: the seed-002 fp16 row)
# carries this tag; its time and accuracy are measured figures like a completed run's.
TRAINED_ON_TAG = "diverged_trained_on"


def averaged(outcome: str, tags: Mapping[str, str]) -> bool:
    """Whether a run's figures count in a comparison's means: it completed, or it diverged and
    trained on through every epoch, as the seed-002 notebook's fp16 runs did."""
    return outcome == "completed" or (outcome == "diverged" and tags.get(TRAINED_ON_TAG) == "true")


# A run without an ``outcome`` tag (one mltrack has not ended: still training, or its process
# died before ``mltrack doctor`` ended it; or a run logged by other code) is what its status says.
BY_STATUS = {
    "RUNNING": "running",
    "SCHEDULED": "running",
    "FINISHED": "completed",
    "FAILED": "failed",
    "KILLED": "killed",
}


def run_outcome(run: Any) -> str:
    """A stored run's outcome (``run``: an ``mlflow.entities.Run``): ``running`` while MLflow
    says RUNNING, whatever its tags say, else its ``outcome`` tag, else ``BY_STATUS``."""
    status = run.info.status
    if BY_STATUS.get(status) == "running":
        return "running"
    return run.data.tags.get("outcome") or BY_STATUS.get(status, status.lower())


def other_outcomes(results: Iterable[Any]) -> str:
    """``running 1, failed 2``: how the runs that do not count ended ("" if all count);
    ``results``: ``mltrack.compare.report.Result``s (their ``outcome``, and ``averaged``)."""
    found = Counter(r.outcome for r in results if not r.averaged)
    return ", ".join(f"{outcome} {n}" for outcome, n in sorted(found.items()))


OOM_ERRORS = ("OutOfMemoryError", "ResourceExhaustedError", "MemoryError")


def outcome_of(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt | Terminated):
        return "killed"
    return "infeasible" if type(exc).__name__ in OOM_ERRORS else "failed"


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
