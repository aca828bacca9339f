"""Data parallelism in ``mltrack compare``: a table of one workload's runs at each world size
(global samples/s, speed-up, scaling efficiency, stragglers, time to a target), and the caveat
when runs of several world sizes share another table's groups.

A job's ``samples_per_s`` is global (all ranks' samples / the slowest rank's time,
``mltrack.tracking.distributed.merge_epoch``); runs without a ``world_size`` param are one process.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mltrack.compare.analysis import Target, int_param, reaching, throughput, workload, world_size
from mltrack.compare.report import Table, fraction, seconds


def _setups(runs: Sequence[Any]) -> dict[str, list[Any]]:
    """The runs by setup (``workload`` on ``hw.label``) that ran at several world sizes."""
    setups: dict[str, list[Any]] = {}
    for run in runs:
        key = f"{workload(run)} on {run.data.tags.get('hw.label', 'unknown')}"
        setups.setdefault(key, []).append(run)
    return {k: rs for k, rs in setups.items() if len({world_size(r) for r in rs}) > 1}


def _counted(selection: Any) -> list[Any]:
    return [r for r, counts in zip(selection.runs, selection.counted, strict=True) if counts]


def scaling_tables(client: Any, selection: Any, target: Target | None = None) -> list[Table]:
    """Data parallelism: a table of a row per world size of one setup (``_setups``: the most
    common); none where the counted runs all have one world size or no setup ran at several.

    Columns: world size; nodes × processes per node; runs; global samples/s = the median
    ``throughput`` of the runs; speed-up = that ÷ the smallest world size's; scaling
    efficiency = speed-up ÷ (world size ÷ the smallest world size), 100% when throughput
    grows in proportion to the processes; slowest/fastest rank = the median of the runs' last
    ``rank_time_ratio`` (1.00: balanced); with ``target``, the median wall time until the runs
    reached it (``reaching``, as in ``time_to_target``) and how many did.
    """
    counted = _counted(selection)
    setups = _setups(counted)
    if not setups:
        return []
    chosen = max(setups, key=lambda key: len(setups[key]))
    by_size: dict[int, list[Any]] = {}
    for run in setups[chosen]:
        by_size.setdefault(world_size(run), []).append(run)
    smallest = min(by_size)
    base = _median_of(by_size[smallest], throughput)
    header = ["world size", "nodes × processes", "runs", "global samples/s", "speed-up"]
    header += ["scaling efficiency", "slowest/fastest rank"]
    reached = reaching(client, setups[chosen], target) if target else None
    header += [f"time to {target.metric} {target.op} {target.value:g}"] if target else []
    table = Table("Scaling with data parallelism (world size)", header)
    for size, runs in sorted(by_size.items()):
        row = _scaling_row(runs, size, smallest, base)
        table.rows.append(row + ([_reached_cell(runs, reached)] if reached is not None else []))
    table.notes += [
        f"setup: {chosen}; runs are matched on the batch per process (weak scaling)",
        "global samples/s: median over runs of steady_samples_per_s (else the last epoch's "
        "samples_per_s), all ranks' samples / the slowest rank's time; speed-up = samples/s ÷ "
        f"world size {smallest}'s; scaling efficiency = speed-up ÷ (world size ÷ {smallest})",
    ]
    left_out = len(counted) - len(setups[chosen])
    table.notes += [f"{left_out} run(s) of other setups are not in it"] if left_out else []
    return [table]


def _median_of(runs: Sequence[Any], value: Callable[[Any], float | None]) -> float | None:
    values = [v for v in map(value, runs) if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def _layout(run: Any) -> str:
    """``nodes × processes_per_node``, e.g. "1 × 2"."""
    nodes = max(1, int_param(run, "nodes"))
    return f"{nodes} × {int_param(run, 'processes_per_node', world_size(run) // nodes)}"


def _scaling_row(runs: Sequence[Any], size: int, smallest: int, base: float | None) -> list[str]:
    rate = _median_of(runs, throughput)
    ratio = _median_of(runs, lambda run: run.data.metrics.get("rank_time_ratio"))
    speedup = rate / base if rate is not None and base else math.nan
    return [
        *(str(size), ", ".join(sorted({_layout(run) for run in runs})), str(len(runs))),
        "–" if rate is None else f"{rate:.4g}",
        f"{speedup:.2f}×" if math.isfinite(speedup) else "–",
        fraction(speedup / (size / smallest)) if math.isfinite(speedup) else "–",
        "–" if ratio is None else f"{ratio:.2f}",
    ]


def _reached_cell(runs: Sequence[Any], reached: Mapping[str, tuple[int, float]]) -> str:
    walls = [reached[r.info.run_id][1] for r in runs if r.info.run_id in reached]
    median = seconds(statistics.median(walls)) if walls else "not reached"
    return f"{median} ({len(walls)} of {len(runs)})"


def scaling_caveats(selection: Any) -> list[str]:
    """Counted runs of several world sizes in tables by another key, whose samples/s are each
    job's global figure; and whether the scaling table compares them."""
    counted = _counted(selection)
    sizes = sorted({world_size(run) for run in counted})
    if len(sizes) < 2 or selection.key in ("world_size", "params.world_size"):
        return []
    where = "see the scaling table" if _setups(counted) else "no workload ran at two on one machine"
    return [
        f"runs of world sizes {', '.join(map(str, sizes))} share groups by {selection.key}: "
        f"samples/s is each job's global throughput ({where})"
    ]
