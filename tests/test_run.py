"""The run lifecycle against a real MLflow sqlite store."""

from __future__ import annotations

import pytest

from mltrack.errors import Terminated
from mltrack.run import REDACTED, RunPruned, start_run
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


def test_pruned_and_diverged_outcomes(store, client):
    with pytest.raises(RunPruned), start_run("exp", run_name="pruned", tracking_uri=store):
        raise RunPruned()
    with start_run("exp", run_name="diverged", tracking_uri=store) as run:
        run.mark_diverged(epoch=0, step=17, loss=float("nan"))
    pruned, diverged = all_runs(client, "exp")
    assert (pruned.info.status, pruned.data.tags["outcome"]) == ("KILLED", "pruned")
    assert (diverged.info.status, diverged.data.tags["outcome"]) == ("FINISHED", "diverged")
    assert diverged.data.tags["diverged_step"] == "17"


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


def test_default_store_is_sqlite_under_mlruns(tmp_path, monkeypatch):
    from mltrack.run import resolve_tracking_uri

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
