"""Tables of results, shared by experiments' terminal output and the runs' report artifacts."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
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
            f"{o} {sum(r.outcome == o for r in group)}"
            for o in dict.fromkeys(r.outcome for r in group)
        )
        ok = [r for r in group if r.outcome == "completed"]
        cells = [mean_spread([r.metrics[m] for r in ok if m in r.metrics]) for m in metrics]
        rows.append([precision, str(len(group)), outcomes, *cells])
    return markdown(["precision", "runs", "outcomes", *metrics], rows)


def seconds(value: float) -> str:
    """Durations as the seed-000 table wrote them: ``2m 3s`` or ``3.91s``."""
    if not math.isfinite(value):
        return "–"
    if abs(value) < 60:
        return f"{value:.2f}s"
    minutes, rest = divmod(abs(value), 60)
    return f"{'-' if value < 0 else ''}{int(minutes)}m {rest:.0f}s"


def fraction(value: float) -> str:
    return f"{value:.2%}" if math.isfinite(value) else "–"


def number(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "–"


@dataclass(frozen=True)
class Row:
    label: str
    metric: str
    fmt: Callable[[float], str] = number


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def delta_table(
    groups: Mapping[str, Sequence[Mapping[str, float]]], rows: Sequence[Row], baseline: str
) -> str:
    """The seed-000 shape: a row per metric, a column per group, then each group's delta.

    A group's value is the mean over its runs; groups of one run are marked ``(n=1)`` in the
    header so a single sample is never read as an average.
    """
    names = list(groups)
    others = [n for n in names if n != baseline]
    header = ["metric", *(f"{n} (n={len(groups[n])})" for n in names)]
    header += [f"Δ {n} − {baseline}" for n in others]
    body = []
    for row in rows:
        means = {n: _mean([m[row.metric] for m in groups[n] if row.metric in m]) for n in names}
        cells = [row.fmt(means[n]) for n in names]
        for n in others:
            delta = means[n] - means[baseline]
            ratio = f" ({means[n] / means[baseline] - 1:+.1%})" if means[baseline] else ""
            cells.append(
                ("+" if delta >= 0 else "") + row.fmt(delta) + ratio
                if math.isfinite(delta)
                else "–"
            )
        body.append([row.label, *cells])
    return markdown(header, body)
