"""Reading many runs at once: every matching run page by page, and metric histories in bulk.

``search_all`` pages through ``search_runs`` (a page holds up to 50,000 runs), so no selection
is cut short. Histories (charts, per-epoch tables) were one ``get_metric_history`` call per run
and metric, which made ``mltrack compare`` take 172 s over 4,000 runs (issue 13). Here a
database-backed store (sqlite, PostgreSQL: MLflow's SQLAlchemy store) answers one query per
metric for up to ``CHUNK`` runs, through the store's own ``get_metric_history_bulk``, the method
MLflow's server uses for its bulk-history endpoint; a tracking server, whose client has no bulk
call, gets the per-run calls ``THREADS`` at a time. Charts need no more runs than they can
show: ``sample`` picks runs evenly from a group.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 500  # run ids per query: far below sqlite's limit on bound variables
THREADS = 8  # concurrent requests to a tracking server
MAX_STEPS = 100_000  # points per run and metric a bulk query may return
CURVE_RUNS = 50  # runs per group a learning-curve chart averages


SEARCH_PAGE = 50_000  # MLflow's largest page of search_runs


def search_all(client: Any, experiment_ids: list[str], filter_string: str) -> list[Any]:
    """Every matching run, page by page (one page up to 50,000 runs)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string, max_results=SEARCH_PAGE, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def sample(items: Sequence[T], limit: int = CURVE_RUNS) -> list[T]:
    """At most ``limit`` items, evenly spaced (first and last kept), in their order."""
    if len(items) <= limit:
        return list(items)
    if limit == 1:
        return [items[-1]]
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def _bulk(client: Any) -> Any:
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return getattr(store, "get_metric_history_bulk", None)


def metric_histories(
    client: Any, run_ids: Iterable[str], metric: str
) -> dict[str, dict[int, float]]:
    """``{run_id: {step: value}}`` for the runs that logged ``metric`` (the last value of a
    step wins, as in MLflow's charts)."""
    ids = list(dict.fromkeys(run_ids))
    out: dict[str, dict[int, float]] = {}
    bulk = _bulk(client)
    if bulk is not None:
        for first in range(0, len(ids), CHUNK):
            chunk = ids[first : first + CHUNK]
            for point in bulk(chunk, metric, max_results=MAX_STEPS * len(chunk)):
                out.setdefault(point.run_id, {})[point.step] = point.value
        return out
    with ThreadPoolExecutor(THREADS) as pool:
        histories = pool.map(lambda run_id: client.get_metric_history(run_id, metric), ids)
        for run_id, points in zip(ids, histories, strict=True):
            for point in sorted(points, key=lambda m: m.timestamp):
                out.setdefault(run_id, {})[point.step] = point.value
    return out
