"""``mltrack compare``: the seeds' comparison tables, curves and leaderboard from MLflow runs.

Runs are selected by experiment, MLflow filter string or run ids (default: every experiment),
grouped by any param or tag, and rendered as: the seed-000 precision table (a column per group,
deltas against a baseline), the seed-002 table (mean ± spread over repeats), the seed-001
hardware leaderboard (speed-up over a CPU), where world sizes differ a scaling table (data
parallelism), learning curves and a time-vs-accuracy scatter.
A study's parent run and earlier report runs are never counted as runs.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from mltrack.compare import published
from mltrack.compare.analysis import (
    Target,
    devices,
    hourly_price,
    noise_caveats,
    parity_table,
    speed_table,
    time_to_target,
    workload,
)
from mltrack.compare.fetch import CURVE_RUNS, matching_runs, metric_histories, sample
from mltrack.compare.report import (
    PRECISION_ROWS,
    SUMMARY_METRICS,
    Report,
    Result,
    Table,
    delta_table,
    groups_of,
    non_finite_note,
    results_table,
    seconds,
)
from mltrack.compare.scaling import scaling_caveats, scaling_tables
from mltrack.errors import UsageError, bad_value
from mltrack.tracking.outcomes import run_outcome
from mltrack.tracking.warmup import refuse_deleted

SKIPPED_ROLES = ("study", "report")
CURVE_METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")


@dataclass
class Selection:
    """The runs a comparison is over, each with its group value."""

    key: str
    runs: list[Any]  # mlflow.entities.Run
    groups: list[str]
    experiments: dict[str, str] = field(default_factory=dict)  # id -> name

    @cached_property  # built once, not once per table that reads it (seven a report)
    def results(self) -> list[Result]:
        return [
            Result(g, run_outcome(r), dict(r.data.metrics), r.data.tags, r.info.run_id)
            for r, g in zip(self.runs, self.groups, strict=True)
        ]

    @cached_property
    def counted(self) -> list[bool]:
        """Per run, whether its figures count in the comparison (``outcomes.averaged``: it
        completed, or trained on through a divergence as seed 002's fp16 runs did)."""
        return [result.averaged for result in self.results]


def _value(run: Any, key: str) -> str | None:
    if key.startswith("params."):
        return run.data.params.get(key[7:])
    if key.startswith("tags."):
        return run.data.tags.get(key[5:])
    value = run.data.params.get(key)
    return value if value is not None else run.data.tags.get(key)


def select(
    client: Any,
    *,
    experiment: str = "",
    filter_string: str = "",
    run_ids: Sequence[str] = (),
    group_by: str = "precision",
) -> Selection:
    """Find the runs; ``UsageError`` names the flag when the selection is empty or bad."""
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            known = sorted(e.name for e in client.search_experiments())
            raise bad_value("--experiment", experiment, f"one of {', '.join(known) or '(none)'}")
        refuse_deleted(found)  # its runs are deleted with it: say why none match
        experiments = [found]
    else:
        experiments = list(client.search_experiments())
    names = {e.experiment_id: e.name for e in experiments}
    if run_ids:
        from mlflow.exceptions import MlflowException

        runs = []
        for run_id in run_ids:
            try:
                runs.append(client.get_run(run_id))
            except MlflowException as exc:  # not found, or not an id; anything else is not --runs'
                if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise
                raise bad_value("--runs", run_id, "the id of a run in this store") from None
    elif names:
        try:
            runs = matching_runs(client, list(names), filter_string)
        except Exception as exc:
            message = str(exc).splitlines()[0]
            raise bad_value("--filter", filter_string, f"an MLflow filter ({message})") from exc
    else:
        runs = []
    runs = [r for r in runs if r.data.tags.get("mltrack.role") not in SKIPPED_ROLES]
    runs.sort(key=lambda r: r.info.start_time)
    if not runs:
        what = (
            f"--filter {filter_string!r}"
            if filter_string
            else (f"--experiment {experiment!r}" if experiment else "the store")
        )
        raise UsageError(f"{what}: matched no runs")
    groups = [_value(r, group_by) for r in runs]
    if all(g is None for g in groups):
        keys = sorted(
            {k for r in runs for k in r.data.params}
            | {k for r in runs for k in r.data.tags if not k.startswith("mlflow.")}
        )
        raise bad_value(
            "--group-by",
            group_by,
            f"a param or tag of the selected runs, e.g. {', '.join(keys[:12])}",
        )
    for run in runs:
        names.setdefault(run.info.experiment_id, run.info.experiment_id)
    return Selection(group_by, runs, [g if g is not None else "(none)" for g in groups], names)


def caveats(selection: Selection) -> list[str]:
    """What a reader must know before trusting the numbers."""
    notes = []
    machines = {r.data.tags.get("hw.label", "?") for r in selection.runs}
    if len(machines) > 1 and selection.key not in (
        "hw.label",
        "tags.hw.label",
        "hw.fingerprint",
        "tags.hw.fingerprint",
    ):
        notes.append(
            f"runs from {len(machines)} different machines are mixed: {', '.join(sorted(machines))}"
        )
    modules = {r.data.tags.get("mltrack.module", "?") for r in selection.runs}
    if len(modules) > 1:
        notes.append(
            f"runs of {len(modules)} different experiments are mixed: {', '.join(sorted(modules))}"
        )
    single = [g for g, ms in groups_of(selection.results).items() if len(ms) == 1]
    if single:
        notes.append(f"groups with one completed run (no spread): {', '.join(single)}")
    excluded = [r for r in selection.results if not r.averaged]
    if excluded:
        notes.append(f"{len(excluded)} run(s) not completed are listed but not averaged in")
    named = [(r.name, r.metrics) for r in selection.results if r.averaged]
    if note := non_finite_note(named, sorted({k for _, metrics in named for k in metrics})):
        notes.append(note)
    nan = sum(r.averaged and r.outcome == "diverged" for r in selection.results)
    if nan:
        notes.append(
            f"{nan} diverged run(s) trained every epoch on NaN (the seed's protocol): their "
            "times and accuracy are averaged in"
        )
    return notes + noise_caveats(selection) + scaling_caveats(selection)


def precision_table(selection: Selection, baseline: str = "") -> Table:
    groups = groups_of(selection.results)
    names = [g for g, ms in groups.items() if ms]
    if not names:
        raise UsageError("no completed runs to compare")
    if baseline and baseline not in groups:
        raise bad_value("--baseline", baseline, f"one of {', '.join(groups)}")
    return delta_table(
        groups,
        PRECISION_ROWS,
        baseline or names[0],
        title=f"Time and accuracy by {selection.key} (seed-000 shape)",
    )


def repeats_table(selection: Selection, metrics: Sequence[str] | None = None) -> Table:
    """Mean ± spread per group; ``metrics`` picks the columns (seed 004: accuracy, F1, time).

    Columns asked for by name must exist; the default columns show "–" where runs lack them.
    """
    known = {k for r in selection.runs for k in r.data.metrics}
    for metric in metrics or ():
        if metric not in known:
            raise bad_value(
                "--metrics",
                metric,
                f"metrics the runs logged, e.g. {', '.join(sorted(known)[:10])}",
            )
    energy = ("energy_wh",) if "energy_wh" in known else ()  # GPUs with NVML's energy counter
    return results_table(
        selection.results,
        selection.key,
        metrics or (*SUMMARY_METRICS, *energy),
        title=f"Mean ± spread over repeats by {selection.key} (seed-002 shape)",
    )


def leaderboard(
    selection: Selection, cpu_baseline: str = "", prices: dict[str, float] | None = None
) -> Table:
    """The seed-001 shape: a row per machine and process count (``devices``), fastest first,
    speed-up over a CPU, cost = ``hourly_price`` × time. Machines are ranked on the most
    common ``workload`` of the selection only (experiment, data, model, epochs, batch per
    process, precision); other runs are left out, and said so."""
    finished = [
        run
        for run, counts in zip(selection.runs, selection.counted, strict=True)
        if counts and math.isfinite(run.data.metrics.get("total_wall_s", math.nan))
    ]
    if not finished:
        raise UsageError("no completed runs with a total_wall_s to rank")
    workloads = [workload(r) for r in finished]
    ranked = max(set(workloads), key=workloads.count)
    by_machine: dict[str, list[float]] = {}
    gpu: dict[str, bool] = {}
    hourly: dict[str, float | None] = {}
    for run, kind in zip(finished, workloads, strict=True):
        if kind != ranked:
            continue
        label = devices(run)
        gpu[label] = run.data.tags.get("hw.gpu_count", "0") != "0"
        hourly[label] = hourly_price(run, prices)
        by_machine.setdefault(label, []).append(run.data.metrics["total_wall_s"])
    times = {label: statistics.fmean(v) for label, v in by_machine.items()}
    cpus = [label for label in times if not gpu[label]]
    if cpu_baseline and cpu_baseline not in times:
        raise bad_value("--cpu-baseline", cpu_baseline, f"one of {', '.join(times)}")
    base = cpu_baseline or (max(cpus, key=lambda label: times[label]) if cpus else "")
    header = ["rank", "hardware", "runs", "time", "speed-up over CPU"]
    if prices:
        header.append("cost per run")
    table = Table("Hardware leaderboard (seed-001 shape)", header)
    for rank, label in enumerate(sorted(times, key=lambda label: times[label]), 1):
        speedup = f"{times[base] / times[label]:.2f}×" if base else "– (no CPU run)"
        row = [str(rank), label, str(len(by_machine[label])), seconds(times[label]), speedup]
        if prices:
            price = hourly[label]
            row.append(f"{price * times[label] / 3600:.4f}" if price is not None else "–")
        table.rows.append(row)
    if base:
        table.notes.append(f"baseline: {base}")
    table.notes.append(f"workload: {ranked}")
    left_out = len(workloads) - workloads.count(ranked)
    if left_out:
        table.notes.append(f"{left_out} run(s) of other workloads are not ranked")
    return table


def histories(client: Any, selection: Selection, metric: str) -> dict[str, list[list[float]]]:
    """Per group, the per-epoch values of ``metric`` of up to ``CURVE_RUNS`` completed runs
    (evenly sampled: a chart's mean needs no more), fetched in bulk."""
    by_group: dict[str, list[str]] = {}
    for run, group, counts in zip(selection.runs, selection.groups, selection.counted, strict=True):
        if counts:
            by_group.setdefault(group, []).append(run.info.run_id)
    chosen = {group: sample(ids) for group, ids in by_group.items()}
    found = metric_histories(client, (i for ids in chosen.values() for i in ids), metric)
    out: dict[str, list[list[float]]] = {}
    for group, ids in chosen.items():
        for run_id in ids:
            if found.get(run_id):
                steps = found[run_id]
                out.setdefault(group, []).append([steps[s] for s in sorted(steps)])
    return out


def runs_csv(selection: Selection) -> str:
    """One row per selected run: its id, name, experiment, group, outcome, machine label and
    the latest value of every metric any of them logged (empty where a run has none)."""
    metrics = sorted({k for r in selection.runs for k in r.data.metrics})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["run_id", "run_name", "experiment", selection.key, "outcome", "hw.label", *metrics]
    )
    experiments = selection.experiments
    rows = []
    for run, result in zip(selection.runs, selection.results, strict=True):
        info, data = run.info, run.data
        values = data.metrics
        rows.append(
            [
                *(info.run_id, info.run_name, experiments.get(info.experiment_id, "")),
                *(result.group, result.outcome, data.tags.get("hw.label", "")),
                *[values.get(m, "") for m in metrics],
            ]
        )
    writer.writerows(rows)
    return buffer.getvalue()


def build(
    client: Any,
    selection: Selection,
    *,
    baseline: str = "",
    cpu_baseline: str = "",
    prices: dict[str, float] | None = None,
    metrics: Sequence[str] | None = None,
    target: Target | None = None,
    parity: str = "",
    parity_tol: float = 0.01,
    figures: bool = True,
) -> Report:
    """The tables (from the runs' latest metrics) and, with ``figures``, the charts: only
    they (and ``--target``/``--parity``) need metric histories, fetched in bulk
    (``mltrack.compare.fetch``), so a report that is printed, not written, never asks for them."""

    tables = [
        precision_table(selection, baseline),
        repeats_table(selection, metrics),
        speed_table(selection, baseline),
        leaderboard(selection, cpu_baseline, prices),
        *scaling_tables(client, selection, target),  # only where world sizes differ
    ]
    if target is not None:
        tables.append(time_to_target(client, selection, target, prices))
    if parity:
        tables.append(parity_table(client, selection, parity, parity_tol))
    modules = {
        r.data.tags.get("mltrack.module", "").removeprefix("experiments.") for r in selection.runs
    }
    if any(published.for_experiment(module) for module in modules):  # else no run is read
        runs = [
            ({**r.data.tags, **r.data.params}, result)
            for r, result in zip(selection.runs, selection.results, strict=True)
        ]
        for module in sorted(modules):
            tables += published.tables_for(module, runs)
    charts = charts_of(client, selection) if figures else {}
    notes = caveats(selection)
    if charts and max(map(len, groups_of(selection.results).values()), default=0) > CURVE_RUNS:
        notes.append(f"learning curves average up to {CURVE_RUNS} runs per group, sampled evenly")
    return Report(tables, notes, runs_csv(selection), charts)


def charts_of(client: Any, selection: Selection) -> dict[str, Any]:
    from mltrack.compare.plots import group_curves, time_vs_accuracy

    curves = {m: histories(client, selection, m) for m in CURVE_METRICS}
    points = {
        g: [(m.get("total_wall_s", math.nan), m.get("test_accuracy", math.nan)) for m in ms]
        for g, ms in groups_of(selection.results).items()
    }
    return {
        "learning_curves.png": group_curves(curves, selection.key),
        "time_vs_accuracy.png": time_vs_accuracy(points, selection.key),
    }


def log_report(tracking_uri: str, report: Report, experiment: str, key: str) -> str:
    """Store the report as artifacts of a run tagged ``mltrack.role=report``; return its id."""
    from mltrack.tracking.run import start_run

    with (
        start_run(
            experiment,
            run_name=f"compare by {key}",
            tags={"mltrack.role": "report", "group_by": key},
            tracking_uri=tracking_uri,
        ) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for path in report.write(Path(tmp)):
            run.log_artifact(path)
    return run.run_id
