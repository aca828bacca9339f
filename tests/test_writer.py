"""The writer process (issue 28): training processes that never load MLflow, a store away at
the start, refusals that are not outages, and deaths on either side; real processes, a real
sqlite store and a real ``mlflow server``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException, get_error_code

from mltrack.tracking import records
from tests.conftest import all_runs, env_for, wait_until
from tests.test_cli import free_port
from tests.test_server import mlflow_server

# A training loop written against mltrack's own verbs: epochs a fifth of a second apart.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import mltrack

    uri, epochs = sys.argv[1], int(sys.argv[2])
    with mltrack.start_run("w", tracking_uri=uri, params={"lr": 0.1}) as run:
        print(json.dumps({"run_id": run.run_id, "pid": os.getpid()}), flush=True)
        for epoch in range(epochs):
            if os.environ.get("CHANGE_PARAM") and epoch == 1:
                run.log_params({"lr": 0.2})  # the store refuses a changed value
            if os.environ.get("DISK_FULL") and epoch == 2:  # the journal can grow no more
                import resource, signal
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                run.flush()
                size = run.journal.path.stat().st_size
                resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
            run.end_epoch(epoch, {"loss": 1.0 / (epoch + 1)})
            print(f"epoch {epoch}", flush=True)
            time.sleep(float(os.environ.get("EPOCH_S", "0.2")))
    mlflow = sorted(m for m in sys.modules if m.split(".")[0] == "mlflow")
    print(json.dumps({"run_id": run.run_id, "mlflow": mlflow}), flush=True)
    """
)


def script(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(path), *args],
        cwd=tmp_path,
        env={**env_for(tmp_path), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_training_process_never_loads_mlflow_and_its_run_arrives_whole(tmp_path, store):
    trained = script(tmp_path, store, "4")
    out, err = trained.communicate(timeout=300)
    assert trained.returncode == 0, err[-3000:]
    last = json.loads(out.splitlines()[-1])
    assert last["mlflow"] == [], last["mlflow"]  # not one mlflow module in this process
    client = MlflowClient(store)
    run = client.get_run(last["run_id"])  # in the store when the process returned
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2, 3]


def test_the_main_command_with_an_export_loads_no_mlflow_either(tmp_path, store):
    """The README's main command, export and verification included, called in a fresh
    process so the test can read its ``sys.modules`` at the end."""
    code = textwrap.dedent(
        f"""
        import sys
        from experiments.cifar_amp import main
        code = main(["--dataset", "synthetic", "--synthetic-size", "256", "--epochs", "1",
                     "--tracking-uri", {store!r}])
        assert code == 0, code
        print(sorted(m for m in sys.modules if m.split(".")[0] == "mlflow"))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env_for(tmp_path),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "[]"
    [run] = all_runs(MlflowClient(store), "cifar_amp")
    assert run.info.status == "FINISHED" and run.data.tags["reload_ok"] == "true"


def test_a_store_away_at_the_start_costs_one_line_and_the_run_arrives_later(tmp_path, run_module):
    """Issue 28's command: nothing listens on the port; training runs to the end (exit 0)
    with one line about the store; once a server listens, ``mltrack sync`` delivers the
    run FINISHED with every epoch."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    trained = run_module(
        "experiments.fashion_mnist_precision", "--dataset", "digits", "--epochs", "2",
        "--precision", "fp32", "--repeats", "1", "--no-export", "--tracking-uri", uri,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    about = [line for line in trained.stderr.splitlines() if "127.0.0.1" in line]
    assert len(about) == 1 and "is away (connection refused)" in about[0], trained.stderr
    assert "Traceback" not in trained.stderr
    with mlflow_server(
        f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", port
    ):  # fmt: skip
        synced = run_module("mltrack.cli", "sync")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        client = MlflowClient(uri)
        [run] = all_runs(client, "fashion_mnist_precision")
        assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]


def test_a_training_sigkilled_at_its_third_epoch_is_killed_in_the_store_within_10_s(
    tmp_path, store
):
    trained = script(tmp_path, store, "1000", EPOCH_S="0.5")
    assert trained.stdout is not None
    run_id = json.loads(trained.stdout.readline())["run_id"]
    while trained.stdout.readline().strip() != "epoch 3":  # epochs 0-2 journaled by now
        pass
    trained.send_signal(signal.SIGKILL)
    trained.wait(timeout=30)
    client = MlflowClient(store)
    wait_until(lambda: client.get_run(run_id).info.status == "KILLED", 10, "KILLED in 10 s")
    run = client.get_run(run_id)
    assert "ended without ending its run" in run.data.tags["error"]
    assert len(client.get_metric_history(run_id, "loss")) >= 3


def test_a_refused_record_is_named_at_once_set_aside_and_the_rest_delivered(tmp_path, store):
    """MLflow refuses a changed param value for good: that record alone is set aside (kept
    beside the journal), named in one line, and the run ends FINISHED with every epoch,
    without waiting out the end's time-out."""
    trained = script(tmp_path, store, "4", CHANGE_PARAM="1", MLTRACK_END_TIMEOUT_S="900")
    out, err = trained.communicate(timeout=300)
    assert trained.returncode == 0, err[-3000:]
    [line] = [x for x in err.splitlines() if "refused" in x]
    assert "param lr" in line and "set aside" in line, err
    run_id = json.loads(out.splitlines()[-1])["run_id"]
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    assert len(client.get_metric_history(run_id, "loss")) == 4
    [aside] = (tmp_path / ".cache/mltrack/spool/refused").glob("*.jsonl")
    entry = json.loads(aside.read_text())
    assert entry["record"] == {"type": "params", "values": {"lr": "0.2"}}


def writer_of(pid: int) -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "mltrack.tracking.writer" in cmdline and f'"pid": {pid}' in " ".join(cmdline):
            return process
    raise AssertionError(f"no writer process for {pid}")


def test_the_writer_killed_mid_run_training_goes_on_and_the_next_writer_delivers(tmp_path, store):
    trained = script(tmp_path, store, "8", EPOCH_S="0.5")
    assert trained.stdout is not None
    first = json.loads(trained.stdout.readline())
    while trained.stdout.readline().strip() != "epoch 1":
        pass
    writer_of(first["pid"]).kill()
    _, err = trained.communicate(timeout=300)
    assert trained.returncode == 0, err[-3000:]
    client = MlflowClient(store)
    run = client.get_run(first["run_id"])
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(first["run_id"], "loss")
    assert sorted(m.step for m in history) == list(range(8))  # each epoch once


def test_two_syncs_at_once_deliver_each_record_once(tmp_path, store):
    """A journal left by a dead process, synced by two ``mltrack sync`` at once: the
    points they report sent add up to the journal's, once."""
    from mltrack.tracking.spool import Journal

    client = MlflowClient(store)
    run_id = client.create_run(client.create_experiment("s")).info.run_id
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    spool = tmp_path / ".cache/mltrack/spool"
    journal = Journal(spool, "k", store, run_id=run_id)
    journal.header.update(pid=int(gone.stdout), pid_start=1.0)
    journal.append(
        {"type": "metric", "key": "m", "value": float(i), "step": i, "timestamp_ms": i}
        for i in range(20000)
    )
    env = env_for(tmp_path)
    command = [sys.executable, "-m", "mltrack.cli", "sync"]
    syncs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in "ab"]
    outputs = [s.communicate(timeout=300)[0] for s in syncs]
    sent = [int(line.split("sent ")[1].split()[0]) for o in outputs for line in o.splitlines()
            if " sent " in line]  # fmt: skip
    assert sum(sent) == 20000, outputs
    assert len(client.get_metric_history(run_id, "m")) == 20000
    assert client.get_run(run_id).info.status == "KILLED"


def rest(code: str, message: str = "m") -> RestException:
    return RestException({"error_code": code, "message": message})


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (rest("INVALID_PARAMETER_VALUE", "Changing param values is not allowed"), records.RECORD),
        (rest("INVALID_PARAMETER_VALUE", "Invalid metric name"), records.RECORD),
        (rest("BAD_REQUEST"), records.RECORD),
        (rest("RESOURCE_ALREADY_EXISTS"), records.RECORD),
        (rest("RESOURCE_DOES_NOT_EXIST", "Run 'x' not found"), records.RUN),
        (rest("INVALID_PARAMETER_VALUE", "must be in the 'active' state"), records.RUN),
        (rest("UNAUTHENTICATED"), records.CREDENTIALS),
        (rest("PERMISSION_DENIED"), records.CREDENTIALS),
        (rest("INTERNAL_ERROR"), records.OUTAGE),
        (rest("TEMPORARILY_UNAVAILABLE"), records.OUTAGE),
        (rest("REQUEST_LIMIT_EXCEEDED"), records.OUTAGE),
        (rest("DEADLINE_EXCEEDED"), records.OUTAGE),
        # A proxy's page instead of MLflow's JSON: sorted by its HTTP status.
        (
            MlflowException("error code 401 != 200", error_code=get_error_code(401)),
            records.CREDENTIALS,
        ),
        (
            MlflowException("error code 403 != 200", error_code=get_error_code(403)),
            records.CREDENTIALS,
        ),
        (MlflowException("error code 502 != 200", error_code=get_error_code(502)), records.OUTAGE),
        (MlflowException("error code 503 != 200", error_code=get_error_code(503)), records.OUTAGE),
        (MlflowException("error code 404 != 200", error_code=get_error_code(404)), records.RECORD),
        (MlflowException("API request failed with exception Connection refused"), records.OUTAGE),
        (ConnectionError("Connection refused"), records.OUTAGE),
        (OSError(113, "No route to host"), records.OUTAGE),
        (TimeoutError("timed out"), records.OUTAGE),
    ],
)
def test_every_kind_of_answer_is_sorted_in_one_place(error, kind):
    assert records.classify(error)[0] == kind


def test_the_sql_stores_real_refusals_are_sorted_too(client):
    """The same sorting on what the SQL store itself raises."""
    run_id = client.create_run(client.create_experiment("r")).info.run_id
    client.log_param(run_id, "lr", "0.1")

    def raised(call) -> str:
        try:
            call()
        except Exception as exc:
            return records.classify(exc)[0]
        raise AssertionError("the store took it")

    assert raised(lambda: client.log_param(run_id, "lr", "0.2")) == records.RECORD
    assert raised(lambda: client.log_metric(run_id, "bad//name", 1.0)) == records.RECORD
    assert raised(lambda: client.log_metric("0" * 32, "loss", 1.0)) == records.RUN
    client.delete_run(run_id)
    assert raised(lambda: client.log_metric(run_id, "loss", 1.0)) == records.RUN


def test_offline_journals_without_trying_the_store_and_sync_delivers(tmp_path, store):
    trained = script(tmp_path, store, "3", MLTRACK_OFFLINE="1")
    _, err = trained.communicate(timeout=300)
    assert trained.returncode == 0, err[-3000:]
    assert "offline" in err and not Path(store.removeprefix("sqlite:///")).exists()
    env = env_for(tmp_path)
    synced = subprocess.run([sys.executable, "-m", "mltrack.cli", "sync"], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert synced.returncode == 0, synced.stdout
    [run] = all_runs(MlflowClient(store), "w")
    assert run.info.status == "FINISHED"
    assert len(MlflowClient(store).get_metric_history(run.info.run_id, "loss")) == 3
    assert os.listdir(tmp_path / ".cache/mltrack/spool") == []


def test_a_disk_that_fills_while_journaling_ends_the_run_failed_naming_the_folder(tmp_path, store):
    """The journal cannot grow past epoch 2 (``RLIMIT_FSIZE``, as a full disk): one line names
    the folder, and the writer, told through its stdin, ends the run FAILED with the epochs
    that reached the store."""
    trained = script(tmp_path, store, "5", DISK_FULL="1")
    out, err = trained.communicate(timeout=300)
    assert trained.returncode == 0, err[-3000:]
    spool = str(tmp_path / ".cache/mltrack/spool")
    [line] = [x for x in err.splitlines() if "could not journal" in x]
    assert spool in line and "File too large" in line and "FAILED" in line, err
    client = MlflowClient(store)
    run_id = json.loads(out.splitlines()[0])["run_id"]
    wait_until(lambda: client.get_run(run_id).info.status == "FAILED", 10, "FAILED")
    run = client.get_run(run_id)
    assert spool in run.data.tags["error"] and run.data.tags["outcome"] == "failed"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1]
