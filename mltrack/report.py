"""Tables of results, shared by experiments' terminal output and the runs' report artifacts."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Protocol


class Result(Protocol):
    precision: str
    outcome: str
    metrics: dict[str, float]


def mean_spread(values: Sequence[float]) -> str:
    """``mean ± sample standard deviation`` or the single value marked ``(n=1)``."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4g} (n=1)"
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(results: Sequence[Result]) -> str:
    """One row per precision: runs, outcomes, training time and test metrics, mean ± spread.

    Diverged and failed runs are counted in the outcome column and left out of the means.
    """
    metrics = ["total_wall_s", "total_cpu_s", "test_accuracy", "test_loss"]
    precisions = list(dict.fromkeys(r.precision for r in results))
    rows = []
    for precision in precisions:
        group = [r for r in results if r.precision == precision]
        outcomes = ", ".join(
            f"{o} {sum(r.outcome == o for r in group)}" for o in dict.fromkeys(r.outcome for r in group)
        )
        ok = [r for r in group if r.outcome == "completed"]
        cells = [mean_spread([r.metrics[m] for r in ok if m in r.metrics]) for m in metrics]
        rows.append([precision, str(len(group)), outcomes, *cells])
    return markdown(["precision", "runs", "outcomes", *metrics], rows)
