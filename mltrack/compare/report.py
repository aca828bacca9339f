"""Comparison tables: what the seeds printed by hand, computed from runs.

A ``Table`` renders to markdown (terminal, artifacts) and HTML. The rules that keep
comparisons honest live here: groups of one run say ``(n=1)``; diverged, failed, pruned and
killed runs are counted in an outcomes column and never averaged in, except diverged runs that
trained every epoch on NaN as the seed-002 notebook's fp16 runs did
(``mltrack.tracking.run.averaged``).
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltrack.tracking.outcomes import averaged


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""] if self.title else []
        lines += ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        lines += [""] + [f"_{note}_" for note in self.notes] if self.notes else []
        return "\n".join(lines)

    def html(self) -> str:
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in self.rows
        )
        notes = "".join(f"<p><em>{html.escape(n)}</em></p>" for n in self.notes)
        title = f"<h3>{html.escape(self.title)}</h3>" if self.title else ""
        return f"{title}<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>{notes}"

    def __str__(self) -> str:
        return self.markdown()


def non_finite(value: float) -> str:
    """``nan``, ``inf`` or ``-inf``: how every table shows a value that is not a number."""
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def left_out(values: Sequence[float]) -> tuple[list[float], str]:
    """The finite ``values``, and what was left out of a mean or median: `` (+2 nan, +1 inf)``
    ("" when nothing was); a table's notes name the runs (``non_finite_note``)."""
    finite = [v for v in values if math.isfinite(v)]
    counts: dict[str, int] = {}
    for value in values:
        if not math.isfinite(value):
            counts[non_finite(value)] = counts.get(non_finite(value), 0) + 1
    return finite, "".join(f" (+{n} {name})" for name, n in counts.items())


def mean_spread(values: Sequence[float]) -> str:
    """``mean ± sample standard deviation`` of the finite values, or the single value marked
    ``(n=1)``; values that are not finite (a loss that diverged) are left out and counted
    (``0.52 ± 0.01 (+1 inf)``), and shown as they are when no value is finite."""
    if not values:
        return "–"
    finite, rest = left_out(values)
    if not finite:
        return ", ".join(dict.fromkeys(non_finite(v) for v in values)) + (
            " (n=1)" if len(values) == 1 else ""
        )
    if len(finite) == 1:
        return f"{finite[0]:.4g} (n=1){rest}"
    return f"{statistics.fmean(finite):.4g} ± {statistics.stdev(finite):.2g}{rest}"


def non_finite_note(named: Sequence[tuple[str, Mapping[str, float]]], keys: Sequence[str]) -> str:
    """A table note naming the runs whose ``keys`` are not finite ("" if none): ``named`` is
    (run name or id, metrics) per run."""
    found = []
    for name, metrics in named:
        odd = [
            f"{k}={non_finite(metrics[k])}" for k in keys if not math.isfinite(metrics.get(k, 0))
        ]
        found += [f"{name} ({', '.join(odd)})"] if odd else []
    if not found:
        return ""
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    return (
        "not finite, shown as nan/inf and left out of means, medians and spreads: "
        + ", ".join(found[:10])
        + more
    )


def seconds(value: float) -> str:
    """Durations as the seed-000 table wrote them: ``2m 3s`` or ``3.91s``."""
    if not math.isfinite(value):
        return non_finite(value)
    if abs(value) < 60:
        return f"{value:.2f}s"
    minutes, rest = divmod(abs(value), 60)
    return f"{'-' if value < 0 else ''}{int(minutes)}m {rest:.0f}s"


def fraction(value: float) -> str:
    return f"{value:.2%}" if math.isfinite(value) else non_finite(value)


def number(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else non_finite(value)


@dataclass(frozen=True)
class Row:
    label: str
    metric: str
    fmt: Callable[[float], str] = number


@dataclass(frozen=True)
class Result:
    """One run as the tables see it."""

    group: str
    outcome: str
    metrics: Mapping[str, float]
    tags: Mapping[str, str] = field(default_factory=dict)
    name: str = ""  # the run's id or name, for notes that name runs

    @property
    def averaged(self) -> bool:
        return averaged(self.outcome, self.tags)


def _mean(values: Sequence[float]) -> float:
    """The mean of the finite values (``non_finite_note`` names the others)."""
    finite = [v for v in values if math.isfinite(v)]
    if finite or not values:
        return statistics.fmean(finite) if finite else math.nan
    return values[0] if len({str(v) for v in values}) == 1 else math.nan  # all inf: inf


def groups_of(
    results: Sequence[Result], completed_only: bool = True
) -> dict[str, list[Mapping[str, float]]]:
    """Metrics per group in first-seen order; only the runs whose figures are averaged
    (``Result.averaged``) unless told otherwise."""
    out: dict[str, list[Mapping[str, float]]] = {}
    for r in results:
        out.setdefault(r.group, [])
        if r.averaged or not completed_only:
            out[r.group].append(r.metrics)
    return out


SUMMARY_METRICS = ("total_wall_s", "total_cpu_s", "test_accuracy", "test_loss")


# A training loss that moved less than this (relative) from the first epoch to the last did not
# train: e.g. Keras' Adam under pure bf16, whose beta_2 = 0.999 rounds to 1.0 in bfloat16 so
# every step is zero (docs/precision.md).
FLAT_LOSS = 1e-3


def not_training(metrics: Mapping[str, float]) -> bool:
    """Whether a run's training loss did not move over its epochs (two or more)."""
    change = metrics.get("loss_change")
    return change is not None and math.isfinite(change) and abs(change) < FLAT_LOSS


def results_table(
    results: Sequence[Result],
    key: str = "precision",
    metrics: Sequence[str] = SUMMARY_METRICS,
    title: str = "",
) -> Table:
    """The seed-002 shape: per group, the runs, their outcomes and mean ± spread."""
    table = Table(title, [key, "runs", "outcomes", *metrics])
    for group, completed in groups_of(results).items():
        members = [r for r in results if r.group == group]
        counts = {
            o: sum(r.outcome == o for r in members)
            for o in dict.fromkeys(r.outcome for r in members)
        }
        outcomes = ", ".join(f"{o} {n}" for o, n in counts.items())
        cells = [mean_spread([m[k] for m in completed if k in m]) for k in metrics]
        table.rows.append([group, str(len(members)), outcomes, *cells])
        named = [(r.name or r.group, r.metrics) for r in members if r.averaged]
        if note := non_finite_note(named, metrics):
            table.notes.append(f"{group}: {note}")
        flat = sum(not_training(r.metrics) for r in members)
        if flat:
            table.notes.append(
                f"{group}: the training loss of {flat} run(s) did not move over its epochs "
                f"(less than {FLAT_LOSS:.1%}): it did not train (docs/precision.md)"
            )
    return table


def delta_table(
    groups: Mapping[str, Sequence[Mapping[str, float]]],
    rows: Sequence[Row],
    baseline: str,
    title: str = "",
) -> Table:
    """The seed-000 shape: a row per metric, a column per group, then each group's delta.

    A group's value is the mean over its runs; the header gives each group's run count.
    """
    names = [n for n in groups if groups[n]]
    others = [n for n in names if n != baseline]
    header = ["metric", *(f"{n} (n={len(groups[n])})" for n in names)]
    header += [f"Δ {n} − {baseline}" for n in others]
    table = Table(title, header)
    for row in rows:
        values = {n: [m[row.metric] for m in groups[n] if row.metric in m] for n in names}
        means = {n: _mean(values[n]) for n in names}
        cells = [row.fmt(means[n]) if values[n] else "–" for n in names]  # –: none logged
        for n in others:
            delta = means[n] - means.get(baseline, float("nan"))
            if not math.isfinite(delta):
                cells.append("–")
                continue
            ratio = f" ({means[n] / means[baseline] - 1:+.1%})" if means[baseline] else ""
            cells.append(("+" if delta >= 0 else "") + row.fmt(delta) + ratio)
        table.rows.append([row.label, *cells])
    return table


PRECISION_ROWS = (
    Row("User CPU time", "total_user_cpu_s", seconds),
    Row("System CPU time", "total_system_cpu_s", seconds),
    Row("Total CPU time", "total_cpu_s", seconds),
    Row("Wall time", "total_wall_s", seconds),
    Row("Accuracy", "test_accuracy", fraction),
    Row("Validation loss", "val_loss", number),
)


@dataclass
class Report:
    tables: list[Table]
    notes: list[str]
    csv: str
    figures: dict[str, Any]  # file name -> matplotlib figure

    def markdown(self, figures: bool = True) -> str:
        """The report; ``figures``: link the PNGs (only where ``write`` puts them beside it)."""
        parts = [t.markdown() for t in self.tables]
        parts += [f"![{name}]({name})" for name in self.figures if figures]
        notes = "\n".join(f"- {n}" for n in self.notes)
        return ("**Caveats**\n\n" + notes + "\n\n" if notes else "") + "\n\n".join(parts) + "\n"

    def html(self, figures: bool = True) -> str:
        body = "".join(t.html() for t in self.tables)
        shown = self.figures if figures else {}
        body += "".join(f'<p><img src="{name}" alt="{name}"></p>' for name in shown)
        notes = "".join(f"<li>{n}</li>" for n in self.notes)
        return (
            "<!doctype html><meta charset='utf-8'><title>mltrack comparison</title>"
            "<style>table{border-collapse:collapse}td,th{border:1px solid #999;"
            "padding:2px 8px}</style>" + (f"<ul>{notes}</ul>" if notes else "") + body
        )

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        files = {"report.md": self.markdown(), "report.html": self.html(), "runs.csv": self.csv}
        paths = []
        for name, text in files.items():
            (folder / name).write_text(text)
            paths.append(folder / name)
        for name, figure in self.figures.items():
            figure.savefig(folder / name, dpi=100)
            paths.append(folder / name)
        return paths
