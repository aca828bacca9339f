"""``mltrack.compare.fetch``: the bulk read of runs returns what MLflow's own ``search_runs``
returns, on a real sqlite store and a real PostgreSQL server, with and without a filter string."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from mltrack import cache
from mltrack.compare import database, fetch
from mltrack.tracking.run import start_run
from tests.postgres import postgres_server

# Each selects some of the active runs, not all (checked below), except the last: none.
FILTERS = (
    "params.precision = 'fp32'",
    "params.precision != 'fp32' AND params.batch_size = '64'",
    "params.seed IS NULL",
    "metrics.loss < 0.5",
    "metrics.loss != 0.7",  # a NaN loss matches "!=" in MLflow
    "metrics.val_accuracy >= 0.5 AND metrics.loss > 0.1",
    "tags.outcome = 'completed'",
    "tags.`mltrack.role` = 'study'",
    "tags.hw.label LIKE 'Xeon%'",
    "tags.`mltrack.role` IS NULL",
    "attributes.status = 'FAILED'",
    "attributes.status != 'FINISHED'",
    "attributes.run_name LIKE 'fp%'",
    "attributes.run_name = 'renamed'",  # MLflow matches the mlflow.runName tag here
    "datasets.name = 'toy'",
    "attributes.start_time > 0 AND params.precision = 'bf16'",
    "metrics.loss > 1e30",
)


def populate(uri: str) -> tuple[list[str], str]:
    """Runs shaped like mltrack's, and the corner cases of MLflow's run tables; returns the
    ids of the two experiments and of the deleted run."""
    import mlflow.data
    import numpy as np

    cpu = {"hw.label": "Xeon (2 cores)", "hw.gpu_count": "0"}
    with start_run(
        "fetch", run_name="study", tags={"mltrack.role": "study"}, tracking_uri=uri
    ) as p:
        for seed, precision in enumerate(("fp32", "bf16", "fp32", "mixed_bf16")):
            params = {"precision": precision, "batch_size": 64 if seed < 3 else 128, "seed": seed}
            with start_run("fetch", run_name=precision, params=params, tags=cpu, parent=p) as run:
                run.set_tags({"precision": precision})
                for epoch in range(3):
                    loss = 1.0 / (epoch + 2 + seed)
                    run.end_epoch(epoch, {"loss": loss, "val_accuracy": 1 - loss})
                run.log_metrics({"total_wall_s": 10.0 + seed, "test_accuracy": 0.9}, step=0)
                if seed == 1:
                    data = mlflow.data.from_numpy(np.zeros((4, 2)), name="toy")
                    run.log_inputs([("training", data)])
    with start_run("fetch", run_name="fp16", params={"precision": "fp16"}, tracking_uri=uri) as run:
        run.log_metrics({"loss": 0.7}, step=0)
        run.log_metrics({"loss": math.nan}, step=1)  # the latest loss is NaN
        run.stop("diverged", epoch=1)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fetch").experiment_id
    # Repeated steps: MLflow's latest value is the highest (step, timestamp, value).
    repeated = client.create_run(experiment, run_name="repeated", start_time=1_000).info.run_id
    for value, step, timestamp in (
        (0.9, 1, 1_000),
        (0.6, 1, 2_000),
        (0.8, 1, 2_000),
        (0.1, 0, 3_000),
    ):
        client.log_metric(repeated, "loss", value, timestamp=timestamp, step=step)
    client.log_param(repeated, "precision", "fp32")
    client.set_terminated(repeated, "KILLED")
    # Same start time: MLflow orders these by run id. One has nothing logged at all.
    for name in ("tie-a", "tie-b", "tie-c"):
        client.create_run(experiment, run_name=name, start_time=1_000)
    # A run named before MLflow 1.30: no name in the runs table, only the mlflow.runName tag.
    renamed = client.create_run(experiment, run_name="renamed").info.run_id
    with fetch.sql_store(client).ManagedSessionMaker(read_only=False) as session:
        from mlflow.store.tracking.dbmodels.models import SqlRun

        session.query(SqlRun).filter(SqlRun.run_uuid == renamed).update({"name": ""})
    deleted = client.create_run(experiment, run_name="fp32-deleted").info.run_id
    client.log_param(deleted, "precision", "fp32")
    client.delete_run(deleted)
    other = client.create_experiment("other")
    with start_run("other", run_name="fp32", params={"precision": "fp32"}, tracking_uri=uri) as run:
        run.log_metrics({"loss": 0.2}, step=0)
    return [experiment, other], deleted


def comparable(metrics: dict[str, float]) -> dict[str, object]:
    return {k: "NaN" if math.isnan(v) else v for k, v in metrics.items()}


def assert_same_runs(bulk: list | None, searched: list) -> None:
    assert bulk is not None
    assert [r.info.run_id for r in bulk] == [r.info.run_id for r in searched]
    for mine, theirs in zip(bulk, searched, strict=True):
        assert mine.info == theirs.info, (vars(mine.info), vars(theirs.info))
        assert mine.data.params == theirs.data.params
        assert mine.data.tags == theirs.data.tags
        assert comparable(mine.data.metrics) == comparable(theirs.data.metrics)


def database_of(client: MlflowClient) -> database.Database:
    found = fetch.database_of(client)
    assert found is not None
    return found


def assert_same_experiments(reader: database.DatabaseClient, client: MlflowClient) -> None:
    """The reads ``mltrack compare`` makes of experiments: what ``client`` answers."""
    client.delete_experiment(client.create_experiment("deleted"))

    def key(e):
        return (e.experiment_id, e.name, e.lifecycle_stage, e.artifact_location, e.tags)

    assert sorted(map(key, reader.search_experiments())) == sorted(
        map(key, client.search_experiments())
    )
    for name in ("fetch", "deleted", "no such experiment"):
        mine, theirs = reader.get_experiment_by_name(name), client.get_experiment_by_name(name)
        assert (mine and key(mine)) == (theirs and key(theirs)), name
    # Anything else is the real client's.
    some = client.search_runs([client.get_experiment_by_name("fetch").experiment_id])[0]
    assert reader.get_run(some.info.run_id).info == some.info


def check_store(uri: str) -> None:
    """Every filter: the bulk read equals ``search_runs``, order included."""
    ids, deleted = populate(uri)
    client = MlflowClient(uri)
    store = fetch.sql_store(client)
    assert store is not None
    db = database.Database.of(store)
    reader = database.reading_client(uri, lambda: client)
    assert isinstance(reader, database.DatabaseClient)
    assert_same_experiments(reader, client)
    assert_same_runs(fetch.matching_runs(reader, ids), client.search_runs(ids, max_results=1000))
    everything = client.search_runs(ids, max_results=1000)
    assert deleted in {r.info.run_id for r in client.search_runs(ids, run_view_type=ViewType.ALL)}
    assert deleted not in {r.info.run_id for r in everything}
    assert_same_runs(fetch.read_runs(db, ids), everything)
    picked = ", ".join(f"'{r.info.run_id}'" for r in everything[1::3])
    for filter_string in (*FILTERS[:-1], f"attributes.run_id IN ({picked})", FILTERS[-1]):
        searched = client.search_runs(ids, filter_string, max_results=1000)
        assert_same_runs(fetch.read_runs(db, ids, filter_string), searched)
        assert_same_runs(fetch.matching_runs(client, ids, filter_string), searched)
        assert_same_runs(fetch.matching_runs(reader, ids, filter_string), searched)
        if filter_string != FILTERS[-1]:
            assert 0 < len(searched) < len(everything), filter_string
    # sqlite's LIKE ignores case unless a session says otherwise, as MLflow's sessions do
    assert client.search_runs(ids, "tags.hw.label ILIKE 'xeon%'")
    assert client.search_runs(ids, "tags.hw.label LIKE 'xeon%'") == []
    assert fetch.matching_runs(reader, ids, "tags.hw.label LIKE 'xeon%'") == []
    assert fetch.read_runs(db, ids, FILTERS[-1]) == []


def test_bulk_read_equals_search_runs_on_sqlite(tmp_path):
    (tmp_path / "mlruns").mkdir()
    check_store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def test_bulk_read_equals_search_runs_on_postgresql():
    with postgres_server(("mlflow",)) as server:
        check_store(f"{server}/mlflow")


def test_latest_metric_is_the_highest_step_then_timestamp_then_value(tmp_path):
    """Independently of ``search_runs``: each latest value is the point of the metric's
    history with the highest (step, timestamp, value), as MLflow defines it."""
    (tmp_path / "mlruns").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    ids, _ = populate(uri)
    client = MlflowClient(uri)
    runs = fetch.read_runs(database_of(client), ids)
    assert runs is not None
    repeated_steps = 0
    for run in runs:
        for key, value in run.data.metrics.items():
            history = client.get_metric_history(run.info.run_id, key)
            latest = max(
                history,
                key=lambda m: (m.step, m.timestamp, 0.0 if math.isnan(m.value) else m.value),
            )
            assert comparable({key: value}) == comparable({key: latest.value})
            repeated_steps += len({m.step for m in history}) < len(history)
    assert repeated_steps  # a step logged more than once was among them


def test_runs_without_a_json_aggregate_read_row_by_row(tmp_path, monkeypatch):
    """A SQL dialect without a JSON object aggregate (MySQL, SQL Server here) reads params and
    tags a row at a time: the same runs."""
    (tmp_path / "mlruns").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    ids, _ = populate(uri)
    client = MlflowClient(uri)
    monkeypatch.setattr(fetch, "JSON_OBJECT_AGG", {})
    assert_same_runs(fetch.read_runs(database_of(client), ids), client.search_runs(ids))


def test_a_filter_mlflow_refuses_gets_mlflows_own_error(tmp_path):
    (tmp_path / "mlruns").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri)
    ids = [client.create_experiment("e")]
    bad = "params.precision ==== 1"
    assert fetch.read_runs(database_of(client), ids, bad) is None
    with pytest.raises(MlflowException) as searched:
        client.search_runs(ids, bad)
    with pytest.raises(MlflowException) as ours:
        fetch.matching_runs(client, ids, bad)
    assert str(ours.value) == str(searched.value)


def test_a_file_store_is_read_through_search_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps it for old stores
    uri = (tmp_path / "mlruns").as_uri()
    with start_run("files", params={"precision": "fp32"}, tracking_uri=uri) as run:
        run.log_metrics({"loss": 0.5}, step=0)
    client = MlflowClient(uri)
    assert fetch.sql_store(client) is None
    ids = [client.get_experiment_by_name("files").experiment_id]
    assert_same_runs(
        fetch.matching_runs(client, ids, "params.precision = 'fp32'"), client.search_runs(ids)
    )


def test_a_store_the_reader_cannot_read_as_mlflow_would_gets_the_real_client(tmp_path, monkeypatch):
    """``reading_client`` hands back the real client for a file store; a database with an
    ``experiments`` table that is not MLflow's (the real client refuses it); a schema older or
    newer than the installed MLflow's (the real client says ``mlflow db upgrade``);
    experiments outside MLflow's default workspace while workspaces are off (the real client
    refuses the store), and workspaces on. A store it can read gets a ``DatabaseClient``. (A
    database without MLflow's tables is refused: ``test_compare``.)"""
    real = object()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert database.reading_client((tmp_path / "files").as_uri(), lambda: real) is real
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE experiments (name TEXT)").connection.close()
    assert database.reading_client(f"sqlite:///{foreign}", lambda: real) is real
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    MlflowClient(uri).create_experiment("e")
    assert isinstance(database.reading_client(uri, lambda: real), database.DatabaseClient)

    def changed(sql: str) -> str:
        copy = tmp_path / f"changed-{len(list(tmp_path.iterdir()))}.db"
        copy.write_bytes(db.read_bytes())
        with sqlite3.connect(copy) as connection:
            connection.execute(sql)
        connection.close()
        return f"sqlite:///{copy}"

    older = changed("UPDATE alembic_version SET version_num = '451aebb31d03'")
    assert database.reading_client(older, lambda: real) is real
    with pytest.raises(MlflowException, match="out-of-date database schema"):
        MlflowClient(older).search_experiments()
    newer = changed("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    assert database.reading_client(newer, lambda: real) is real
    other_workspace = changed("UPDATE experiments SET workspace = 'team-b' WHERE name = 'e'")
    assert database.reading_client(other_workspace, lambda: real) is real
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert database.reading_client(uri, lambda: real) is real


def test_the_schema_head_is_mlflows_and_is_read_from_the_cache(tmp_path, monkeypatch):
    """``schema_heads`` is what ``SqlAlchemyStore`` checks a database against, and after the
    first read it comes from the cache (a stale entry there is what the reader believes)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    monkeypatch.setenv("MLTRACK_CACHE_DIR", str(tmp_path / "cache"))
    assert database.schema_heads() == [_get_latest_schema_revision()]
    (entry,) = json.loads((tmp_path / "cache" / "mlflow_schema_heads.json").read_text()).items()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("e")
    assert isinstance(database.reading_client(uri, lambda: None), database.DatabaseClient)
    cache.keep("mlflow_schema_heads.json", entry[0], ["0123456789ab"])
    assert database.reading_client(uri, lambda: None) is None
