"""How a run ends: the outcome vocabulary, its MLflow status, and which runs count.

One table for every path (a plain run, a study's children and parent, a sweep's trials,
compare's report run); ``mltrack.run`` ends runs with it, ``mltrack.report`` and
``mltrack.compare`` decide with ``averaged`` which runs' figures are averaged in.
"""

from __future__ import annotations

from collections.abc import Mapping

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


OOM_ERRORS = ("OutOfMemoryError", "ResourceExhaustedError", "MemoryError")


def outcome_of(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt | Terminated):
        return "killed"
    return "infeasible" if type(exc).__name__ in OOM_ERRORS else "failed"


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
