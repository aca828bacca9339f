"""Reading many runs at once: the runs a comparison selects, and metric histories, in bulk.

``matching_runs`` gives every active run of some experiments that an MLflow filter string
matches, in ``search_runs``' order and with the same content. ``search_runs`` builds an ORM
object per run, param, tag and metric: 22 s for 10,000 sweep-shaped runs on sqlite (issue 21),
for rows a database returns in well under a second. On a database-backed store (sqlite,
PostgreSQL) ``read_runs`` asks the database instead: one query selects the runs, built with
MLflow's own filter translation and natural order (the helpers ``search_runs`` builds its query
with), then one query per table (latest metrics, params, tags) for up to ``CHUNK`` runs reads
their data through MLflow's SQLAlchemy models, the rows taken straight from the driver: 0.6 s
for those 10,000 runs. A command that only reads (``mltrack compare``) goes further with
``mltrack.compare.database.reading_client``: a ``DatabaseClient`` reads experiments and runs on an
engine of its own,
so MLflow's ``SqlAlchemyStore`` (0.6 s to import and open) is never loaded unless a chart or a
run by id needs it. A filter that translation refuses (``search_runs`` then raises
MLflow's own error) and any other store (a file store, a tracking server) go through
``search_all``, which pages through ``search_runs`` (a page holds up to 50,000 runs), so no
selection is cut short.

Histories (charts, per-epoch tables) were one ``get_metric_history`` call per run and metric,
which made ``mltrack compare`` take 172 s over 4,000 runs (issue 13). Here a database-backed
store answers one query per metric for up to ``CHUNK`` runs, through the store's own
``get_metric_history_bulk``, the method MLflow's server uses for its bulk-history endpoint; a
tracking server, whose client has no bulk call, gets the per-run calls ``THREADS`` at a time.
Charts need no more runs than they can show: ``sample`` picks runs evenly from a group.
"""

from __future__ import annotations

import gc
import json
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from mltrack.compare.database import Database, DatabaseClient

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


def as_logged(value: float) -> float:
    """A metric as it was logged: SQL cannot hold infinities, so MLflow's SQL store keeps ±inf
    as ±1.7976931348623157e308 (``SqlAlchemyStore.sanitize_metric_value``) and reads that
    back; a table would print it as a 309-digit number."""
    return math.copysign(math.inf, value) if abs(value) >= sys.float_info.max else value


def matching_runs(client: Any, experiment_ids: list[str], filter_string: str = "") -> list[Any]:
    """Every active run of ``experiment_ids`` that ``filter_string`` matches: what
    ``search_runs`` returns (``mlflow.entities.Run``, newest first), read in bulk from a
    database-backed store (``read_runs``), else, or when MLflow's translation refuses the
    filter, through ``search_all`` (which then raises MLflow's own error for a bad filter).
    Metrics are ``as_logged``."""
    database = database_of(client)
    found = read_runs(database, experiment_ids, filter_string) if database is not None else None
    if found is None:
        found = search_all(client, experiment_ids, filter_string)
    for run in found:
        metrics = run.data.metrics
        if any(abs(v) >= sys.float_info.max for v in metrics.values()):
            run.data._metrics = {k: as_logged(v) for k, v in metrics.items()}
    return found


def database_of(client: Any) -> Database | None:
    """The database ``read_runs`` reads for ``client``: a ``DatabaseClient``'s, or a
    ``SqlAlchemyStore``'s through its own sessions; ``None`` for any other store."""
    if isinstance(client, DatabaseClient):
        return client.database
    store = sql_store(client)
    return None if store is None else Database.of(store)


def sql_store(client: Any) -> Any:
    """The client's ``SqlAlchemyStore`` (sqlite, PostgreSQL, ...), or ``None`` for any other
    store. Its module is looked up, not imported: a client of a file store or a tracking
    server never loaded it, and importing it takes half a second."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    return store if module is not None and isinstance(store, module.SqlAlchemyStore) else None


def read_runs(
    database: Database, experiment_ids: list[str], filter_string: str = ""
) -> list[Any] | None:
    """What ``search_runs(experiment_ids, filter_string)`` returns from ``database``'s store,
    in a few queries, or ``None`` when MLflow's filter translation refuses ``filter_string``.

    The active runs that match, in MLflow's natural order (start time descending, then run
    id), each an ``mlflow.entities.Run`` with its ``RunInfo`` and ``RunData``: the latest value
    of each metric (MLflow's ``latest_metrics``: highest step, then timestamp, then value; NaN
    where a NaN was logged), params and tags. The datasets and logged-model outputs that
    ``search_runs`` adds are left out: no comparison reads them.
    """
    with collector_paused(), database.sessions() as session:
        selected = _selection(database, session, experiment_ids, filter_string)
        if selected is None:
            return None
        rows = session.execute(selected).all()
        metrics, params, tags = _run_data(session, [row[0] for row in rows], database.dialect)
        return [
            _run(row, metrics.get(row[0], {}), params.get(row[0], {}), tags.get(row[0], {}))
            for row in rows
        ]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside (a block, or a decorated function), then
    back as it was.

    For work that allocates in bulk and makes no reference cycle worth collecting on the way:
    every 700 allocations the collector ran, and now and then walked every object the process
    holds, MLflow's modules included (0.2 s of reading 10,000 runs; 0.4 s of importing MLflow
    and opening its store).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _selection(
    database: Database, session: Any, experiment_ids: list[str], filter_string: str
) -> Any:
    """The query of the matching runs' rows, as ``SqlAlchemyStore._search_runs`` builds it
    (its filter clauses, joins and natural order), or ``None`` if translating fails.

    Only a filter needs MLflow's translation, in ``SqlAlchemyStore``'s module (0.6 s to
    import); without one the query is the natural order alone: start time descending, then
    run id, as that module's ``_get_orderby_clauses`` documents it.
    """
    from mlflow.entities import LifecycleStage, ViewType
    from mlflow.store.tracking.dbmodels.models import SqlRun
    from sqlalchemy import select

    attribute: list[Any] = []
    joined: list[Any] = []
    datasets: list[Any] = []
    natural_order: list[Any] = [SqlRun.start_time.desc(), SqlRun.run_uuid]
    if filter_string.strip():
        try:
            from mlflow.store.tracking import sqlalchemy_store as mlflow_sql
            from mlflow.utils.search_utils import SearchUtils

            parsed = SearchUtils.parse_search_filter(filter_string)
            attribute, joined, datasets = mlflow_sql._get_sqlalchemy_filter_clauses(
                parsed, session, database.dialect
            )
            _, natural_order, _ = mlflow_sql._get_orderby_clauses([], session)
        except Exception:  # a filter MLflow refuses, or private helpers that changed
            return None
    query = select(*(getattr(SqlRun, name) for name in RUN_COLUMNS))
    for subquery in joined:
        query = query.join(subquery)
    for dataset in datasets:
        query = query.join(dataset, SqlRun.run_uuid == dataset.c.destination_id)
    stages = LifecycleStage.view_type_to_stages(ViewType.ACTIVE_ONLY)
    return (
        query.distinct()
        .where(
            SqlRun.experiment_id.in_(database.experiment_ids(session, experiment_ids)),
            SqlRun.lifecycle_stage.in_(stages),
            *attribute,
        )
        .order_by(*natural_order)
    )


# SqlRun's columns, in RunInfo's order
RUN_COLUMNS = (
    *("run_uuid", "name", "experiment_id", "user_id", "status", "start_time", "end_time"),
    *("lifecycle_stage", "artifact_uri"),
)
# Aggregates that fold a run's (key, value) rows into one JSON object, per SQL dialect. Params
# and tags are 60 rows a run of a sweep (600,000 at 10,000 runs): folded, the database hands
# over one row per run and table and ``json.loads`` parses it, 0.7 s faster than a row each.
# Metrics stay rows: sqlite writes a JSON number with 15 digits, not the float's 17.
JSON_OBJECT_AGG = {"sqlite": "json_group_object", "postgresql": "json_object_agg"}


def _run_data(
    session: Any, ids: list[str], dialect: str
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The latest metrics, params and tags of the runs ``ids``, each ``{run id: {key: value}}``
    (a run without any has no entry): a query per table for up to ``CHUNK`` ids. (Reading the
    three tables on three threads, each with its own session, saved nothing measurable: the
    driver holds the GIL while it turns rows into Python objects, most of the work.)"""
    from mlflow.store.tracking.dbmodels.models import SqlParam, SqlTag

    return (
        _latest_metrics(session, ids),
        _key_values(SqlParam, dialect, session, ids),
        _key_values(SqlTag, dialect, session, ids),
    )


def _latest_metrics(session: Any, ids: list[str]) -> dict[str, dict[str, float]]:
    """``{run id: {key: latest value}}``, NaN where a NaN was logged."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric as m
    from sqlalchemy import select

    out: dict[str, dict[str, float]] = {}
    for first in range(0, len(ids), CHUNK):
        query = select(m.run_uuid, m.key, m.value, m.is_nan)
        chunk = query.where(m.run_uuid.in_(ids[first : first + CHUNK]))
        for run_id, key, value, is_nan in driver_rows(session, chunk):
            out.setdefault(run_id, {})[key] = math.nan if is_nan else value
    return out


def _key_values(
    model: Any, dialect: str, session: Any, ids: list[str]
) -> dict[str, dict[str, str]]:
    """``{run id: {key: value}}`` of a params or tags table (``model``: ``SqlParam``,
    ``SqlTag``), folded into one JSON object per run where the dialect can."""
    from sqlalchemy import func, select

    out: dict[str, dict[str, str]] = {}
    fold = JSON_OBJECT_AGG.get(dialect)
    for first in range(0, len(ids), CHUNK):
        chunk = ids[first : first + CHUNK]
        if fold is None:
            query = select(model.run_uuid, model.key, model.value)
            for run_id, key, value in driver_rows(session, query.where(model.run_uuid.in_(chunk))):
                out.setdefault(run_id, {})[key] = value
            continue
        folded = getattr(func, fold)(model.key, model.value)
        query = select(model.run_uuid, folded).where(model.run_uuid.in_(chunk))
        for run_id, values in driver_rows(session, query.group_by(model.run_uuid)):
            # sqlite hands over the JSON text; PostgreSQL's drivers parse json themselves
            out[run_id] = json.loads(values) if isinstance(values, str) else values
    return out


def driver_rows(session: Any, statement: Any) -> list[tuple[Any, ...]]:
    """The rows of ``statement`` (a SQLAlchemy ``select``) as the database driver returns them:
    tuples of the driver's values, without SQLAlchemy's result processing.

    The statement is compiled by SQLAlchemy for the session's dialect, its ``IN`` lists
    expanded, and run on the driver's cursor. For the columns read here (strings, floats,
    booleans) the values are the ones SQLAlchemy would give, except that sqlite's booleans
    stay 0 and 1; what the result layer costs is a Python object per row and value: 0.17 s
    of the 0.7 s that reading 10,000 runs' metrics, params and tags takes (issue 21).
    """
    connection = session.connection()
    compiled = statement.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    params = compiled.params
    values = [params[name] for name in compiled.positiontup] if compiled.positional else params
    cursor = connection.connection.cursor()
    try:
        cursor.execute(str(compiled), values)
        return cursor.fetchall()
    finally:
        cursor.close()


def _run(row: Any, metrics: dict[str, float], params: dict[str, str], tags: dict[str, str]) -> Any:
    """An ``mlflow.entities.Run`` as ``SqlRun.to_mlflow_entity`` makes it, from plain rows."""
    from mlflow.entities import Run, RunData, RunInfo
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    run_id, name, experiment_id, user_id, status, start, end, stage, artifact_uri = row
    info = RunInfo(
        run_id=run_id,
        run_name=name or tags.get(MLFLOW_RUN_NAME) or name,
        experiment_id=str(experiment_id),
        user_id=user_id,
        status=status,
        start_time=start,
        end_time=end,
        lifecycle_stage=stage,
        artifact_uri=artifact_uri,
    )
    data = RunData()
    # RunData keeps these three dicts; building a Metric, Param or RunTag per row only for
    # RunData to turn them back into dicts was most of search_runs' time.
    data._metrics, data._params, data._tags = metrics, params, tags
    return Run(info, data)


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
                out.setdefault(point.run_id, {})[point.step] = as_logged(point.value)
        return out
    with ThreadPoolExecutor(THREADS) as pool:
        histories = pool.map(lambda run_id: client.get_metric_history(run_id, metric), ids)
        for run_id, points in zip(ids, histories, strict=True):
            for point in sorted(points, key=lambda m: m.timestamp):
                out.setdefault(run_id, {})[point.step] = as_logged(point.value)
    return out
