"""The seeds' published figures beside the figures measured here.

The figures live as data in ``published.toml`` beside this file, each with its source (seed
file, table and row). For an experiment whose seed published a table, ``beside`` puts every
published figure next to the mean of the matching runs (the runs whose params or tags equal the
figure's ``where``; only runs that ``Result.averaged`` counts), and, for the metrics the table
compares as ratios (times: absolute seconds differ between machines), each group's ratio to the
table's baseline group, published and measured.
"""

from __future__ import annotations

import math
import statistics
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mltrack.compare.report import Result, Table, number, seconds

DATA = Path(__file__).with_name("published.toml")


@dataclass(frozen=True)
class Figure:
    group: str  # the seed's own label for the row
    where: Mapping[str, str]  # params/tags that pick comparable runs; empty: none here
    metric: str  # the mltrack metric it compares with, in that metric's unit
    value: float
    source: str  # seed file, table and row


@dataclass(frozen=True)
class Published:
    id: str
    experiment: str  # the experiment module whose runs it compares with
    title: str
    baseline: str  # the group whose figures divide the others' in the ratio columns
    ratio: tuple[str, ...]  # the metrics compared as ratios to the baseline
    figures: tuple[Figure, ...]
    dataset: str = ""  # what the seed measured on ("": per row, in ``where``)


@cache
def load(path: Path = DATA) -> tuple[Published, ...]:
    """Every published table; ``ValueError`` names the file if a row lacks a field."""
    raw = tomllib.loads(path.read_text())
    try:
        return tuple(
            Published(
                t["id"],
                t["experiment"],
                t["title"],
                t["baseline"],
                tuple(t["ratio"]),
                tuple(
                    Figure(
                        r["group"], dict(r["where"]), r["metric"], float(r["value"]), r["source"]
                    )
                    for r in t["row"]
                ),
                t.get("dataset", ""),
            )
            for t in raw["table"]
        )
    except KeyError as exc:
        raise ValueError(f"{path}: a table or row lacks {exc}") from exc


def for_experiment(experiment: str) -> list[Published]:
    return [t for t in load() if t.experiment == experiment]


def _fmt(metric: str, value: float) -> str:
    if math.isnan(value):  # no finite figure measured (or published)
        return "–"
    return seconds(value) if metric.endswith("_s") else number(value)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else float("nan")


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}×" if math.isfinite(value) and base and math.isfinite(base) else "–"


def beside(table: Published, runs: Sequence[tuple[Mapping[str, str], Result]]) -> Table:
    """The published table with the measured figures of ``runs`` (their params and tags, and
    their ``Result``) beside it."""

    def measured(figure: Figure) -> list[float]:
        if not figure.where:
            return []
        return [
            result.metrics[figure.metric]
            for values, result in runs
            if result.averaged
            and figure.metric in result.metrics
            and all(values.get(k) == v for k, v in figure.where.items())
        ]

    baseline = {f.metric: f for f in table.figures if f.group == table.baseline}
    header = ["seed's row", "metric", "published", "measured here"]
    if table.ratio:
        header += [f"published ÷ {table.baseline}", f"measured ÷ {table.baseline}"]
    out = Table(f"Published by {table.title}", [*header, "source"])
    for figure in table.figures:
        values = measured(figure)
        here = f"{_fmt(figure.metric, _mean(values))} (n={len(values)})" if values else "–"
        row = [figure.group, figure.metric, _fmt(figure.metric, figure.value), here]
        if table.ratio:
            base = baseline.get(figure.metric)
            if figure.metric in table.ratio and base is not None:
                row += [
                    _ratio(figure.value, base.value),
                    _ratio(_mean(values), _mean(measured(base))) if values else "–",
                ]
            else:
                row += ["", ""]
        out.rows.append([*row, figure.source])
    if any(not f.where for f in table.figures):
        out.notes.append("rows without a matching key (other machines) are the seed's only")
    other = sorted(
        {v.get("dataset", "") for v, _ in runs} - {table.dataset, ""} if table.dataset else set()
    )
    if other:
        out.notes.append(
            f"the seed measured on {table.dataset}, these runs on {', '.join(other)}: compare "
            "the ratios, not the values"
        )
    return out


def tables_for(experiment: str, runs: Sequence[tuple[Mapping[str, str], Result]]) -> list[Table]:
    """``beside`` for every table the seed of ``experiment`` published."""
    return [beside(t, runs) for t in for_experiment(experiment)]
