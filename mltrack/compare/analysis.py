"""The comparisons that say whether a difference is real: speed and efficiency per group with
median and minimum, noise caveats, time to a target, precision parity epoch by epoch; what a
run ran on (``world_size``, ``devices``) for ``mltrack.compare.scaling``'s data-parallel tables.

Used by ``mltrack compare`` (``mltrack.compare.command``); every number comes from the runs in the
store: summary metrics for the tables, metric histories only where epochs matter.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mltrack.compare.fetch import metric_histories
from mltrack.compare.report import Table, fraction, left_out, mean_spread, seconds
from mltrack.errors import bad_value
from mltrack.tracking.outcomes import other_outcomes

NOISY_CV = 0.05  # steady epoch time varying more than this across repeats is called out
LOST_SHARE = 0.10  # a run that lost more of the machine's CPU than this is called out
# Metrics that get better as they fall; everything else is better higher.
_LOWER_IS_BETTER = re.compile(r"(loss|error|_s$|wall|time|cost)")


def _by_group(selection: Any) -> dict[str, list[Any]]:
    """Every group of the selection, in order, with its runs that count
    (``Selection.counted``); a group with none maps to an empty list, so a table can say so
    rather than drop it."""
    out: dict[str, list[Any]] = {group: [] for group in selection.groups}
    for run, group, counts in zip(selection.runs, selection.groups, selection.counted, strict=True):
        if counts:
            out[group].append(run)
    return out


NONE_COMPLETED = "no completed run"


def lost_share(run: Any) -> float:
    """Share of the machine's CPU capacity that steal and other processes took during the run."""
    metrics, cores = run.data.metrics, float(run.data.tags.get("hw.cpu_cores", "1") or 1)
    capacity = metrics.get("total_wall_s", 0.0) * cores
    lost = metrics.get("total_cpu_steal_s", 0.0) + metrics.get("total_other_cpu_s", 0.0)
    return lost / capacity if capacity > 0 else 0.0


def _cell(values: Sequence[float], fmt: Any = "{:.4g}".format) -> str:
    """The median of the finite values, the others counted (``report.left_out``)."""
    finite, rest = left_out(values)
    if not finite:
        return ", ".join(dict.fromkeys(fmt(v) for v in values)) if values else "–"
    return fmt(statistics.median(finite)) + rest


def speed_table(selection: Any, baseline: str = "") -> Table:
    """Per group: wall time as mean ± spread, median and minimum; throughput and its speed-up
    over ``baseline`` (default: the first group), TFLOP/s, MFU; with compiled runs, the
    compilation's one-off cost (``compile_wall_s``) beside the steady throughput it buys."""
    groups = _by_group(selection)
    compiled = any("compile_wall_s" in r.data.metrics for runs in groups.values() for r in runs)
    header = [selection.key, "runs", "total wall", "median", "min", "steady samples/s"]
    header += ["speed-up", *(["one-off compile"] if compiled else [])]
    header += ["TFLOP/s", "MFU", "MFU (bound)", "lost to other load", "not counted"]
    table = Table(f"Speed and efficiency by {selection.key}", header)

    def metric(key: str, runs: list[Any]) -> list[float]:
        return [r.data.metrics[key] for r in runs if key in r.data.metrics]

    def rate(runs: list[Any]) -> float | None:
        finite = left_out(metric("steady_samples_per_s", runs))[0]
        return statistics.median(finite) if finite else None

    base = rate(groups.get(baseline) or next((v for v in groups.values() if v), []))
    for group, runs in groups.items():
        others = other_outcomes(r for r in selection.results if r.group == group) or "–"
        if not runs:
            table.rows.append([group, "0", NONE_COMPLETED, *["–"] * (len(header) - 4), others])
            continue
        wall, mine = metric("total_wall_s", runs), rate(runs)
        speedup = f"{mine / base:.2f}×" if mine is not None and base else "–"
        row = [group, str(len(runs)), mean_spread(wall), _cell(wall, seconds)]
        row += [seconds(min(wall)) if wall else "–", _cell(metric("steady_samples_per_s", runs))]
        row += [speedup, *([_cell(metric("compile_wall_s", runs), seconds)] if compiled else [])]
        row += [_cell(metric("steady_achieved_tflops", runs))]
        row += [_cell(metric("steady_mfu", runs), fraction)]
        row += [_cell(metric("steady_mfu_bound", runs), fraction)]
        row += [fraction(max(lost_share(r) for r in runs)), others]
        table.rows.append(row)
    table.notes.append(
        "runs: those that completed (and seed-002 runs that trained on through NaN); "
        "not counted: the others by outcome, running included"
    )
    table.notes.append(
        "median over runs; speed-up: steady samples/s (epochs after the first, so a "
        "compilation's one-off cost is not in it) over the baseline group's"
        + ("; one-off compile: compile_wall_s, paid once in epoch 0" if compiled else "")
        + "; MFU = achieved TFLOP/s / the peak of the run's compute dtype measured with its "
        "framework's matmul kernels over GEMM shapes (tags hw.peak_tflops.*, hw.peak_method; "
        "at most 100%: a run that beats it raises it); MFU (bound) = achieved / cores × max "
        "clock × FLOPs a cycle of the instruction set (hw.bound_tflops.*; – where the machine "
        "hides its clock: hw.bound_unavailable); lost = steal + other processes' CPU / the "
        "machine's capacity"
    )
    return table


def noise_caveats(selection: Any) -> list[str]:
    notes = []
    for group, runs in _by_group(selection).items():
        steady = [
            r.data.metrics["steady_epoch_wall_s"]
            for r in runs
            if "steady_epoch_wall_s" in r.data.metrics
        ]
        if len(steady) >= 2 and statistics.fmean(steady) > 0:
            cv = statistics.stdev(steady) / statistics.fmean(steady)
            if cv > NOISY_CV:
                notes.append(
                    f"{group}: steady epoch time varies {cv:.0%} across {len(steady)} repeats "
                    f"(over {NOISY_CV:.0%}): differences smaller than that are within the noise"
                )
        lost = [share for share in map(lost_share, runs) if share > LOST_SHARE]
        if lost:
            notes.append(
                f"{group}: {len(lost)} run(s) lost more than {LOST_SHARE:.0%} of the machine's "
                f"CPU to steal or other processes (up to {max(lost):.0%}); their times are inflated"
            )
    return notes


# -- what a run ran on, and what it computed -----------------------------------------------


def int_param(run: Any, key: str, default: int = 1) -> int:
    try:
        return int(run.data.params.get(key, default))
    except ValueError:  # not written by mltrack: the default, as for a run without it
        return default


def world_size(run: Any) -> int:
    """A run's processes (param ``world_size``); 1 for a run from before data parallelism."""
    return max(1, int_param(run, "world_size"))


def devices(run: Any) -> str:
    """The hardware a run trained on, its processes counted: the ``hw.label`` tag for one
    process; for a job of several its ``distributed.hardware`` tag ("2 x AMD EPYC (2 cores)"),
    else "<world size> x <hw.label>", with "over N nodes" when it spanned machines."""
    label = run.data.tags.get("hw.label", "unknown")
    size = world_size(run)
    if size == 1:
        return label
    label = run.data.tags.get("distributed.hardware") or f"{size} x {label}"
    nodes = int_param(run, "nodes")
    return label if nodes == 1 else f"{label} over {nodes} nodes"


def read_prices(path: str) -> dict[str, float]:
    """``hardware,price_per_hour`` rows keyed by the ``hw.label`` tag."""
    try:
        with open(path, newline="") as handle:
            return {row["hardware"]: float(row["price_per_hour"]) for row in csv.DictReader(handle)}
    except (OSError, KeyError, ValueError) as exc:
        raise bad_value("--prices", path, "a CSV with columns hardware,price_per_hour") from exc


def hourly_price(run: Any, prices: Mapping[str, float] | None) -> float | None:
    """What a run's machines cost an hour: the ``--prices`` row of its ``hw.label``, once per
    node (param ``nodes``: the processes of one node share its machine); ``None`` if unpriced."""
    price = (prices or {}).get(run.data.tags.get("hw.label", ""))
    return None if price is None else price * int_param(run, "nodes")


WORKLOAD_PARAMS = ("dataset", "model", "epochs", "effective_batch_size", "precision")


def workload(run: Any) -> str:
    """What a run computed, machine and world size aside: only runs of one workload are ranked
    together. Its batch is per process, ``batch_per_process`` = ``effective_batch_size`` ÷
    world size (that param counts every process's samples of a step), so one process and a
    job of two at the same batch are one workload (weak scaling)."""
    params = run.data.params
    parts = [run.data.tags.get("mltrack.module", "?").removeprefix("experiments.")]
    for key in (k for k in WORKLOAD_PARAMS if k in params):
        value = params[key]
        if key == "effective_batch_size" and value.isdigit():
            key, value = "batch_per_process", str(int(value) // world_size(run))
        parts.append(f"{key}={value}")
    return " ".join(parts)


def throughput(run: Any) -> float | None:
    """A run's samples per second, a distributed job's global one (all ranks' samples / the
    slowest rank's time): ``steady_samples_per_s`` (warm-up apart), else its last epoch's
    ``samples_per_s``; ``None`` without either."""
    metrics = run.data.metrics
    return metrics.get("steady_samples_per_s", metrics.get("samples_per_s"))


# -- per-epoch comparisons -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    metric: str
    op: str  # ">=" or "<="
    value: float

    @classmethod
    def parse(cls, text: str) -> Target:
        found = re.fullmatch(r"\s*([\w./-]+)\s*(>=|<=|=)\s*([-+0-9.eE]+)\s*", text)
        try:
            value = float(found.group(3)) if found else math.nan
        except ValueError:
            value = math.nan
        if not found or math.isnan(value):
            raise bad_value("--target", text, "METRIC=VALUE, METRIC>=VALUE or METRIC<=VALUE")
        metric, op = found.group(1), found.group(2)
        if op == "=":
            op = "<=" if _LOWER_IS_BETTER.search(metric) else ">="
        return cls(metric, op, value)

    def reached(self, value: float) -> bool:
        return value >= self.value if self.op == ">=" else value <= self.value


def reaching(client: Any, runs: Sequence[Any], target: Target) -> dict[str, tuple[int, float]]:
    """Per id of the ``runs`` that reached ``target``: the epochs it took (its first epoch at
    the target, counted from 1) and the wall time until then (``epoch_wall_s`` summed up to and
    including that epoch); the histories read in bulk, one query per metric."""
    ids = [r.info.run_id for r in runs]
    values, times = (metric_histories(client, ids, m) for m in (target.metric, "epoch_wall_s"))
    out = {}
    for run_id in ids:
        steps = values.get(run_id, {})
        hit = next((e for e in sorted(steps) if target.reached(steps[e])), None)
        if hit is not None:
            wall = sum(t for e, t in times.get(run_id, {}).items() if e <= hit)
            out[run_id] = (hit + 1, wall)
    return out


def time_to_target(
    client: Any, selection: Any, target: Target, prices: dict[str, float] | None = None
) -> Table:
    """Per group: wall time (sum of ``epoch_wall_s``), epochs and cost until first reached
    (``reaching``); cost = the run's ``hourly_price`` × wall time."""
    header = [selection.key, "runs", "reached", "epochs (median)", "wall (median)", "wall (min)"]
    if prices:
        header.append("cost (median)")
    table = Table(f"Time to {target.metric} {target.op} {target.value:g}", header)
    groups = _by_group(selection)
    reached = reaching(client, [r for runs in groups.values() for r in runs], target)
    for group, runs in groups.items():
        hits = [(run, reached[run.info.run_id]) for run in runs if run.info.run_id in reached]
        epochs, walls = [e for _, (e, _) in hits], [w for _, (_, w) in hits]
        hourly = [(hourly_price(run, prices), wall) for run, (_, wall) in hits]
        costs = [price * wall / 3600 for price, wall in hourly if price is not None]
        row = [group, str(len(runs)), f"{len(walls)} of {len(runs)}"]
        if not runs:
            row = [group, "0", NONE_COMPLETED, "–", "–", "–"]
        elif walls:
            median = statistics.median(walls)
            row += [f"{statistics.median(epochs):g}", seconds(median), seconds(min(walls))]
        else:
            row += ["not reached", "–", "–"]
        if prices:
            row.append(f"{statistics.median(costs):.4f}" if costs else "–")
        table.rows.append(row)
    return table


def parity_table(client: Any, selection: Any, reference: str, tolerance: float) -> Table:
    """Per epoch, each group's val_loss and val_accuracy minus the reference group's run with
    the same seed (each repeat has its own seed); the first epoch over ``tolerance``."""
    groups = _by_group(selection)
    if not groups.get(reference):
        with_runs = [g for g, runs in groups.items() if runs]
        raise bad_value(
            "--parity", reference, f"a group with completed runs: {', '.join(with_runs)}"
        )
    by_seed = {r.data.params.get("seed"): r for r in groups[reference]}
    ids = [r.info.run_id for runs in groups.values() for r in runs]
    history = {key: metric_histories(client, ids, key) for key in ("val_loss", "val_accuracy")}
    table = Table(
        f"Parity with {reference} (same seed), tolerance {tolerance:g}",
        [selection.key, "seed", "epoch", "Δ val_loss", "Δ val_accuracy", "first epoch over"],
    )
    for group, runs in groups.items():
        if group == reference:
            continue
        if not runs:
            table.notes.append(f"{group}: {NONE_COMPLETED}")
        for run in runs:
            seed = run.data.params.get("seed")
            twin = by_seed.get(seed)
            if twin is None:
                table.notes.append(f"{group} seed {seed}: no {reference} run with that seed")
                continue
            deltas = {}
            for key in ("val_loss", "val_accuracy"):
                mine, theirs = (history[key].get(r.info.run_id, {}) for r in (run, twin))
                deltas[key] = {e: mine[e] - theirs[e] for e in sorted(mine.keys() & theirs.keys())}
            epochs = sorted(set(deltas["val_loss"]) | set(deltas["val_accuracy"]))
            over = [
                e for e in epochs if any(abs(d.get(e, 0.0)) > tolerance for d in deltas.values())
            ]
            first = str(over[0]) if over else "none"
            for epoch in epochs:
                table.rows.append(
                    [group, str(seed), str(epoch)]
                    + [f"{d[epoch]:+.4f}" if epoch in d else "–" for d in deltas.values()]
                    + [first]
                )
    return table
