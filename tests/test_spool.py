"""No lost data: each run's journal, its idempotent replay, and ``mltrack sync``.

The store is a real sqlite MLflow store, delivered by the writer on a thread of the test
process (``writer.embed``); where a test needs the store "away" for a moment it makes the
writer's client fail (unit tests may fake). The same faults against a real tracking server,
the writer process and real training processes are in tests/test_server.py and
tests/test_writer.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mltrack import cli
from mltrack.tracking import spool
from mltrack.tracking.run import start_run
from mltrack.tracking.spool import Journal
from mltrack.tracking.warmup import STORES
from tests.conftest import all_runs, wait_until


@pytest.fixture
def spool_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "spool"
    monkeypatch.setenv("MLTRACK_SPOOL_DIR", str(folder))
    return folder


def refused(*args, **kwargs):
    raise ConnectionError("Connection refused")


def test_a_run_journals_what_it_logs_and_drops_the_journal_once_delivered(store, client, spool_dir):
    with start_run("j", params={"lr": 0.1}, tracking_uri=store) as run:
        run.end_epoch(0, {"loss": 1.0})
        run.set_tags({"phase": "a"})
        assert run.flush(10)
        header, records, _ = spool.read(run.journal.path)
        assert header["key"] == run.key and header["pid"] > 0
        assert [r["type"] for r in records] == ["create", "params", "metric", "tags"]
    assert not list(spool_dir.glob("*"))  # everything arrived: nothing left behind
    [r] = all_runs(client, "j")
    assert r.info.status == "FINISHED" and r.data.tags["phase"] == "a"


def test_tags_and_artifacts_logged_while_away_survive_the_points_arriving(
    store, client, spool_dir, tmp_path, monkeypatch
):
    """Regression: v1's metric sink deleted the shared spool file once its own points were
    delivered, with the tags and artifact records written into it during the same outage;
    the run then ended FINISHED without its model files and without ``reload_ok``."""
    model = tmp_path / "model.json"
    model.write_text("{}")
    with start_run("away", tracking_uri=store) as run:
        monkeypatch.setattr(STORES.client(store), "log_artifact", refused)
        run.end_epoch(0, {"loss": 1.0})
        run.log_artifact(model, "model")
        run.set_tags({"reload_ok": "true"})
        model.unlink()  # the caller's temporary file is gone; the journal kept a copy
        wait_until(lambda: spool.read_ack(run.journal.path).get("state") == "away", 10, "away")
        assert "reload_ok" not in client.get_run(run.run_id).data.tags  # waits behind it
        monkeypatch.undo()
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED" and r.data.tags["reload_ok"] == "true"
    assert [a.path for a in client.list_artifacts(run.run_id, "model")] == ["model/model.json"]
    assert not list(spool_dir.glob("*"))


def test_still_away_at_the_end_returns_and_the_writer_delivers_when_the_store_is_back(
    store, client, spool_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr("mltrack.tracking.run.END_TIMEOUT_S", 0.5)
    model = tmp_path / "model.json"
    model.write_text("{}")
    with start_run("away", tracking_uri=store) as run:
        monkeypatch.setattr(STORES.client(store), "log_artifact", refused)
        run.end_epoch(0, {"loss": 1.0})
        run.log_artifact(model, "model")
        run.set_tags({"reload_ok": "true"})
    assert client.get_run(run.run_id).info.status == "RUNNING"  # returned, journaled
    _, records, _ = spool.read(run.journal.path)
    assert records[-1] == {"type": "end", "status": "FINISHED"}
    monkeypatch.undo()
    wait_until(lambda: client.get_run(run.run_id).info.status == "FINISHED", 60, "FINISHED")
    r = client.get_run(run.run_id)
    assert r.data.tags["reload_ok"] == "true" and r.data.tags["outcome"] == "completed"
    assert [a.path for a in client.list_artifacts(run.run_id, "model")] == ["model/model.json"]
    assert [m.step for m in client.get_metric_history(run.run_id, "loss")] == [0]
    wait_until(lambda: not run.journal.exists(), 10, "the journal deleted")


def test_replay_twice_counts_each_point_once_and_ends_the_run(store, client, tmp_path):
    with start_run("spool", tracking_uri=store) as run:
        run.end_epoch(0, {"loss": 3.0})
    run_id = run.run_id
    client.set_terminated(run_id, "RUNNING")  # as if the end never reached the store
    journal = Journal(tmp_path, "k1", store, run_id=run_id)
    records = [
        {"type": "metric", "key": "loss", "value": v, "step": s, "timestamp_ms": 1000 + s}
        for s, v in ((1, 2.0), (2, 1.0))
    ]
    records += [
        {"type": "tags", "values": {"outcome": "completed"}},
        {"type": "end", "status": "FINISHED"},
    ]
    journal.append(records)
    copy = tmp_path / "copy.jsonl"
    copy.write_text(journal.path.read_text())
    done = spool.replay(journal.path)
    assert (done.metrics, done.tags, done.artifacts, done.ended) == (2, 1, 0, "FINISHED")
    assert spool.replay(copy).metrics == 2  # the same records again
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]
    assert sorted(history) == [(0, 3.0), (1, 2.0), (2, 1.0)]
    [r] = all_runs(client, "spool")
    assert r.info.status == "FINISHED" and not journal.exists()


def test_sync_ends_the_run_of_a_dead_process_and_leaves_a_live_one_alone(store, client, spool_dir):
    with start_run("dead", tracking_uri=store) as run:
        run.end_epoch(0, {"loss": 1.0})
    client.set_terminated(run.run_id, "RUNNING")
    # A journal as a SIGKILLed process leaves it: its records, no end.
    command = [sys.executable, "-c", "import os; print(os.getpid())"]
    gone = subprocess.run(command, text=True, capture_output=True, check=True)
    journal = Journal(spool_dir, "k1", store, run_id=run.run_id)
    journal.header.update(pid=int(gone.stdout), pid_start=1.0)
    point = {"type": "metric", "key": "loss", "value": 0.5, "step": 1, "timestamp_ms": 5}
    journal.append([point])
    mine = Journal(spool_dir, "k2", store, run_id=run.run_id)  # this (live) process's
    mine.append([{**point, "step": 2}])
    assert cli.main(["sync"]) == 0
    r = client.get_run(run.run_id)
    assert r.info.status == "KILLED" and r.data.tags["outcome"] == "killed"
    assert "ended without ending its run" in r.data.tags["error"]
    assert sorted(m.step for m in client.get_metric_history(run.run_id, "loss")) == [0, 1]
    assert not journal.exists() and mine.exists()


def test_journal_lines_are_plain_json(tmp_path):
    journal = Journal(tmp_path, "r1", "sqlite:///x.db")
    journal.append([{"type": "tags", "values": {"a": "1"}}])
    lines = journal.path.read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["run", "tags"]


def test_a_torn_last_line_is_set_aside_and_the_rest_delivered(store, client, spool_dir, capsys):
    """A crash while appending leaves the journal's last line cut; v2's sync refused the whole
    journal on every call ("Unterminated string"), so its valid records never arrived."""
    import mlflow.data
    import numpy as np

    with start_run("torn", tracking_uri=store) as run:
        run.log_inputs([("training", mlflow.data.from_numpy(np.zeros((4, 2)), name="zeros"))])
        run.end_epoch(0, {"loss": 1.0})
        run.end_epoch(1, {"loss": 0.5})
        assert run.flush(10)
        journal = run.journal.path
        kept = journal.with_name("copy.jsonl")
        kept.write_text(journal.read_text())
    for cut in ('{"type": "metric", "key": "loss", "val', '{"type": "tags", "values": {"a'):
        torn = kept.with_name(f"torn-{len(cut)}.jsonl")
        torn.write_text(kept.read_text() + cut)  # no newline: the append never finished
        done = spool.replay(torn)
        assert done.metrics == 3 and not torn.exists()  # loss × 2 and epoch 1's loss_change
        assert Path(done.torn).read_text().strip() == cut
    assert cli.main(["sync", "--spool-dir", str(spool_dir)]) == 0  # nothing blocked
    [r] = all_runs(client, "torn")
    assert [m.value for m in client.get_metric_history(r.info.run_id, "loss")] == [1.0, 0.5]
    assert len(r.inputs.dataset_inputs) == 1  # replayed twice, delivered once
