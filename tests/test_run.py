"""The run lifecycle against a real MLflow sqlite store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mltrack.errors import Terminated
from mltrack.studies.data import fingerprint
from mltrack.tracking.limits import REDACTED, redact_uri
from mltrack.tracking.run import STATUS, start_run
from tests.conftest import all_runs


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_success_is_finished_with_params_tags_and_metrics(store, client):
    with start_run(
        "exp",
        run_name="ok",
        params={"lr": 0.1, "opt": {"name": "adam"}},
        tags={"precision": "fp32"},
        tracking_uri=store,
    ) as run:
        for epoch in range(3):
            run.end_epoch(epoch, {"loss": 1.0 / (epoch + 1)})
    [r] = all_runs(client, "exp")
    assert r.info.status == "FINISHED"
    assert r.data.tags["outcome"] == "completed"
    assert r.data.tags["precision"] == "fp32"
    assert r.data.tags["hw.fingerprint"] and r.data.tags["sw.mlflow"]
    assert r.data.params == {"lr": "0.1", "opt.name": "adam"}
    assert history(client, r.info.run_id, "loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3)]


def test_exception_fails_the_run_and_keeps_finished_epochs(store, client):
    with pytest.raises(ValueError, match="boom"), start_run("exp", tracking_uri=store) as run:
        run.end_epoch(0, {"loss": 2.0})
        run.end_epoch(1, {"loss": 1.0})
        raise ValueError("boom")
    [r] = all_runs(client, "exp")
    assert r.info.status == "FAILED"
    assert r.data.tags["outcome"] == "failed"
    assert r.data.tags["error"] == "ValueError: boom"
    assert history(client, r.info.run_id, "loss") == [(0, 2.0), (1, 1.0)]


@pytest.mark.parametrize("signal_exc", [KeyboardInterrupt, Terminated])
def test_interrupt_or_sigterm_kills_the_run(store, client, signal_exc):
    with pytest.raises(signal_exc), start_run("exp", tracking_uri=store):
        raise signal_exc()
    [r] = all_runs(client, "exp")
    assert (r.info.status, r.data.tags["outcome"]) == ("KILLED", "killed")


def test_stop_decisions_end_the_run_with_their_status_and_the_first_one_stands(store, client):
    with start_run("exp", run_name="pruned", tracking_uri=store) as run:
        run.stop("pruned", epoch=2)
        assert run.stopping
    with start_run("exp", run_name="diverged", tracking_uri=store) as run:
        run.stop("diverged", epoch=0, step=17, loss=float("nan"))
        run.stop("pruned", epoch=1)  # too late: the run already diverged
    pruned, diverged = all_runs(client, "exp")
    assert (pruned.info.status, pruned.data.tags["outcome"]) == ("KILLED", "pruned")
    assert pruned.data.tags["pruned_epoch"] == "2"
    assert (diverged.info.status, diverged.data.tags["outcome"]) == ("FAILED", "diverged")
    assert diverged.data.tags["diverged_step"] == "17"
    assert "pruned_epoch" not in diverged.data.tags
    with pytest.raises(ValueError, match="outcome: got 'done', expected one of"):
        run.stop("done")


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [(MemoryError("no room"), "infeasible"), (ValueError("bad"), "failed")],
)
def test_an_exception_ends_the_run_with_the_outcome_it_maps_to(store, client, exc, outcome):
    with pytest.raises(type(exc)), start_run("exp", tracking_uri=store) as run:
        run.stop("diverged")  # an exception overrides an earlier stop decision
        raise exc
    [r] = all_runs(client, "exp")
    assert (r.info.status, r.data.tags["outcome"]) == (STATUS[outcome], outcome)
    assert r.data.tags["error"] == f"{type(exc).__name__}: {exc}"


def test_an_epoch_is_in_the_store_within_a_second_of_its_end(store, client):
    """docs/runs.md: metrics are flushed at epoch end (not at the writer's next 2 s interval)."""
    with start_run("exp", tracking_uri=store) as run:
        run.end_epoch(0, {"warm": 1.0})
        assert run.flush(30)
        waits = []
        for epoch in range(1, 4):
            run.end_epoch(epoch, {"loss": float(epoch)})
            ended = time.monotonic()
            while len(client.get_metric_history(run.run_id, "loss")) < epoch:
                assert time.monotonic() - ended < 1.0, f"epoch {epoch} not stored within 1 s"
                time.sleep(0.02)
            waits.append(time.monotonic() - ended)
    assert max(waits) < 1.0


def test_nested_runs_for_repeats(store, client):
    with start_run("exp", run_name="study", tracking_uri=store) as parent:
        for i in range(3):
            with start_run("exp", run_name=f"r{i}", parent=parent) as child:
                child.end_epoch(0, {"loss": float(i)})
    runs = all_runs(client, "exp")
    parent_run = next(r for r in runs if r.info.run_name == "study")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_run.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["r0", "r1", "r2"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_failing_child_fails_its_parent_too(store, client):
    with (
        pytest.raises(RuntimeError),
        start_run("exp", run_name="study", tracking_uri=store) as parent,
        start_run("exp", run_name="child", parent=parent),
    ):
        raise RuntimeError("x")
    assert {r.info.run_name: r.info.status for r in all_runs(client, "exp")} == {
        "study": "FAILED",
        "child": "FAILED",
    }


def test_mlflow_limits_are_handled_in_one_place(store, client, caplog):
    params: dict[str, object] = {f"p{i}": i for i in range(250)}  # over 100 per log_batch call
    params["long"] = "x" * 7000  # over MLflow's 6000-character limit
    original = dict(params)
    with start_run("exp", params=params, tracking_uri=store):
        pass
    assert params == original  # the caller's dict is never mutated
    [r] = all_runs(client, "exp")
    assert len(r.data.params) == 251
    assert len(r.data.params["long"]) == 6000
    assert "MLflow keeps 6000" in caplog.text


def test_secret_looking_values_never_reach_the_store(store, client):
    with start_run(
        "exp",
        params={
            "db_password": "hunter2",
            "api_key": "k",
            "monkey": "ok",
            "keyboard": "ok",
            "auth": {"token": "t"},
        },
        tracking_uri=store,
    ):
        pass
    [r] = all_runs(client, "exp")
    assert r.data.params["db_password"] == REDACTED
    assert r.data.params["api_key"] == REDACTED
    assert r.data.params["auth.token"] == REDACTED
    assert r.data.params["monkey"] == "ok" and r.data.params["keyboard"] == "ok"


def test_credentials_in_uris_are_redacted_wherever_they_are_logged(store, client):
    planted = "pl4nted-Secret"
    with start_run(
        "exp",
        params={
            "tracking_uri": f"http://admin:{planted}@127.0.0.1:5000",
            "sweep.passthrough": f"--epochs 1 --storage postgresql://u:{planted}@db:5432/optuna",
        },
        tags={"note": f"mysql+pymysql://root:{planted}@host/db?x=1"},
        tracking_uri=store,
    ) as run:
        run.log_text(f"server: https://me:{planted}@example.org/path", "notes/where.md")
        run.stop("failed", error=f"could not reach postgresql://u:{planted}@db/optuna")
    [r] = all_runs(client, "exp")
    assert r.data.params["tracking_uri"] == "http://admin:<redacted>@127.0.0.1:5000"
    assert "postgresql://u:<redacted>@db:5432/optuna" in r.data.params["sweep.passthrough"]
    assert r.data.tags["note"] == "mysql+pymysql://root:<redacted>@host/db?x=1"
    values = [*r.data.params.values(), *r.data.tags.values()]
    assert not [v for v in values if planted in v]
    text = client.download_artifacts(run.run_id, "notes/where.md")
    assert planted not in Path(text).read_text()


def test_default_store_is_sqlite_under_mlruns(tmp_path, monkeypatch):
    from mltrack.tracking.uris import resolve_tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == "sqlite:///mlruns/mlflow.db"
    assert (tmp_path / "mlruns").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri() == "http://127.0.0.1:1"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize("where", ["../outside", "/etc", "model/../../x"])
def test_artifacts_cannot_leave_the_run_artifact_root(store, client, tmp_path, where):
    source = tmp_path / "a.txt"
    source.write_text("x")
    with start_run("art", tracking_uri=store) as run:
        with pytest.raises(ValueError, match="must stay inside the run's artifact root"):
            run.log_artifact(source, where)
        run.log_text("ok", "reports/table.md")
    assert [a.path for a in client.list_artifacts(run.run_id, "reports")] == ["reports/table.md"]


def test_datasets_are_mlflow_dataset_inputs_with_digest_and_context(store, client, tmp_path):
    import numpy as np

    from mltrack.studies.data import ArrayDataset
    from mltrack.tracking import spool
    from mltrack.tracking.spool import Journal

    rng = np.random.default_rng(0)
    data = ArrayDataset(
        "tiny", rng.random((8, 4)), np.arange(8), rng.random((4, 4)), np.arange(4), 8, "generated"
    )
    with start_run("exp", tracking_uri=store) as run:
        run.log_inputs(data.mlflow_inputs())
    inputs = client.get_run(run.run_id).inputs.dataset_inputs
    got = {i.tags[0].value: (i.dataset.name, i.dataset.digest) for i in inputs}
    assert got == {
        "training": ("tiny-train", fingerprint(data.x_train, data.y_train)),
        "evaluation": ("tiny-test", fingerprint(data.x_test, data.y_test)),
    }
    assert all(i.dataset.schema and i.dataset.profile for i in inputs)
    # The journal carries them too: a replay (mltrack sync) logs the same inputs.
    with start_run("exp", tracking_uri=store) as other:
        pass
    journal = Journal(tmp_path, "k1", store, run_id=other.run_id)
    _, training = data.mlflow_inputs()[0]
    journal.append(
        [{"type": "inputs", "datasets": [{"context": "training", **training.to_dict()}]}]
    )
    spool.replay(journal.path)
    [replayed] = client.get_run(other.run_id).inputs.dataset_inputs
    assert replayed.dataset.digest == fingerprint(data.x_train, data.y_train)


def test_system_metrics_come_from_mlflows_own_monitor_while_the_run_lasts(store, client):
    with start_run("exp", tracking_uri=store, system_metrics_interval=0.5) as run:
        time.sleep(2.0)
    metrics = client.get_run(run.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics, sorted(metrics)
    samples = client.get_metric_history(run.run_id, "system/system_memory_usage_megabytes")
    assert len(samples) >= 2


def test_the_first_stop_decision_stands_whichever_thread_makes_it(store, client):
    import threading

    with start_run("stops", tracking_uri=store) as run:
        barrier = threading.Barrier(8)
        decided: list[bool] = []

        def stop(i: int) -> None:
            barrier.wait()
            decided.append(run.stop("diverged" if i % 2 else "pruned", step=i))

        threads = [threading.Thread(target=stop, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(decided) == [False] * 7 + [True]
        with pytest.raises(AttributeError):
            run.outcome = "completed"  # type: ignore[misc]  # read-only: stop() decides
        outcome, details = run.outcome, run.stop_details
    [r] = all_runs(client, "stops")
    assert r.data.tags["outcome"] == outcome
    assert r.data.tags[f"{outcome}_step"] == details[f"{outcome}_step"]


@pytest.mark.parametrize("char", [chr(c) for c in range(33, 127)])
def test_every_password_a_uri_parser_accepts_is_redacted(char):
    """Each printable character inside a password, as the URI's own parser reads it: raw where
    the parser takes it raw, percent-encoded where it must be (``@`` for SQLAlchemy, ``/`` ``?``
    ``#`` ``@`` for http); the password is in no output, the rest of the URI is."""
    from urllib.parse import quote, urlsplit

    from sqlalchemy.engine import make_url

    for scheme, parse in (
        ("postgresql+psycopg", lambda u: make_url(u).password),
        ("https", lambda u: urlsplit(u).password),
    ):
        password = f"Xy9{char}k+Qz"
        uri = f"{scheme}://alice:{password}@db.example:5432/optuna?x=1"
        try:
            readable = parse(uri) == password
        except ValueError:
            readable = False
        if not readable:
            password = f"Xy9{quote(char, safe='')}k+Qz"
            uri = f"{scheme}://alice:{password}@db.example:5432/optuna?x=1"
        text = f"could not reach {uri} (timeout)"
        redacted = redact_uri(text)
        assert password not in redacted, (char, redacted)
        assert redacted == (
            f"could not reach {scheme}://alice:<redacted>@db.example:5432/optuna?x=1 (timeout)"
        ), char
