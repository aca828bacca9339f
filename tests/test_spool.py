"""No lost data: the local spool while the store is away, and its idempotent replay."""

from __future__ import annotations

import json

from mltrack import cli, spool
from mltrack.run import start_run
from mltrack.sink import MetricSink
from tests.conftest import all_runs
from tests.test_sink import FakeStore

HEADER = {"run_id": "r1", "tracking_uri": "sqlite:///x.db"}


def test_failed_points_are_spooled_durably_and_the_spool_dropped_once_delivered(tmp_path):
    store = FakeStore()
    store.failing.set()
    path = tmp_path / "r1.jsonl"
    sink = MetricSink(
        store, flush_interval_s=0.01, retry_interval_s=0.01, spool=path, spool_header=HEADER
    )
    for step in range(5):
        sink.log("loss", float(step), step)
    assert not sink.flush(timeout_s=0.3)
    header, records = spool.read(path)
    assert header == {"type": "run", **HEADER}
    assert sorted(r["step"] for r in records) == [0, 1, 2, 3, 4]  # each spooled once
    store.failing.clear()
    assert sink.flush(timeout_s=5)
    assert sink.close() == [] and not path.exists()
    assert sorted(p.step for p in store.points) == [0, 1, 2, 3, 4]


def test_a_process_dying_during_the_outage_leaves_everything_in_the_spool(tmp_path):
    store = FakeStore()
    store.failing.set()
    path = tmp_path / "r1.jsonl"
    sink = MetricSink(
        store, flush_interval_s=0.01, retry_interval_s=0.01, spool=path, spool_header=HEADER
    )
    sink.log_many({"loss": 1.0, "acc": 0.5}, 0)
    left = sink.close(timeout_s=0.2)  # what a dying process would leave behind
    assert len(left) == 2
    _, records = spool.read(path)
    assert {(r["key"], r["step"]) for r in records} == {("loss", 0), ("acc", 0)}


def test_replay_twice_counts_each_point_once_and_ends_the_run(store, client, tmp_path):
    with start_run("spool", tracking_uri=store) as run:
        run.end_epoch(0, {"loss": 3.0})
    run_id = run.run_id
    client.set_terminated(run_id, "RUNNING")  # as if the end never reached the store
    path = tmp_path / f"{run_id}.jsonl"
    records = [
        {"type": "metric", "key": "loss", "value": v, "step": s, "timestamp_ms": 1000 + s}
        for s, v in ((1, 2.0), (2, 1.0))
    ]
    records.append({"type": "end", "status": "FINISHED", "tags": {"outcome": "completed"}})
    spool.append(path, {"run_id": run_id, "tracking_uri": store}, records)
    copy = tmp_path / "copy.jsonl"
    copy.write_text(path.read_text())
    assert spool.replay(path) == {"metrics": 2, "tags": 1, "artifacts": 0, "ended": 1}
    assert spool.replay(copy)["metrics"] == 2  # the same records again
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]
    assert sorted(history) == [(0, 3.0), (1, 2.0), (2, 1.0)]
    [r] = all_runs(client, "spool")
    assert r.info.status == "FINISHED" and not path.exists()


def test_spool_lines_are_plain_json(tmp_path):
    path = tmp_path / "x.jsonl"
    spool.append(path, HEADER, [{"type": "tags", "tags": {"a": "1"}}])
    assert [json.loads(line)["type"] for line in path.read_text().splitlines()] == ["run", "tags"]


def test_artifacts_logged_while_the_store_is_away_are_kept_and_synced(
    store, client, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLTRACK_SPOOL_DIR", str(tmp_path / "spool"))
    model = tmp_path / "model.json"
    model.write_text("{}")

    def refused(*args, **kwargs):
        raise ConnectionError("Connection refused")

    # 1. Away during the run, back at its end: delivered when the run ends.
    with start_run("away", tracking_uri=store) as run:
        real = run.client.log_artifact
        monkeypatch.setattr(run.client, "log_artifact", refused)
        run.log_artifact(model, "model")  # does not raise: kept for later
        assert (tmp_path / "spool" / f"{run.run_id}.files" / "model" / "model.json").exists()
        monkeypatch.setattr(run.client, "log_artifact", real)
    assert [a.path for a in client.list_artifacts(run.run_id, "model")] == ["model/model.json"]
    assert client.get_run(run.run_id).info.status == "FINISHED"

    # 2. Still away when the run ends: the run waits, RUNNING, for `mltrack sync`.
    with start_run("away", tracking_uri=store) as run:
        monkeypatch.setattr(run.client, "log_artifact", refused)
        run.log_artifact(model, "model")
    kept = tmp_path / "spool" / f"{run.run_id}.files" / "model" / "model.json"
    assert kept.read_text() == "{}" and client.get_run(run.run_id).info.status == "RUNNING"
    monkeypatch.undo()
    monkeypatch.setenv("MLTRACK_SPOOL_DIR", str(tmp_path / "spool"))
    assert cli.main(["sync"]) == 0
    assert [a.path for a in client.list_artifacts(run.run_id, "model")] == ["model/model.json"]
    assert not kept.exists() and not (tmp_path / "spool" / f"{run.run_id}.jsonl").exists()
    assert client.get_run(run.run_id).info.status == "FINISHED"
