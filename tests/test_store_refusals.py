"""What a store refuses for good (a deleted experiment or run) is said in one line (issue 18)."""

from __future__ import annotations

import subprocess
import sys

import optuna
from mlflow import MlflowClient

from mltrack import cli
from mltrack.tracking import spool
from mltrack.tracking.records import REFUSED
from mltrack.tracking.run import start_run
from tests.conftest import env_for, epochs_logged, start_training, wait_until
from tests.test_concurrent_starts import TRAIN

FM = TRAIN[2:]


def test_a_deleted_experiment_is_one_line_naming_the_flag_before_anything(
    tmp_path, store, run_module
):
    client = MlflowClient(tracking_uri=store)
    client.delete_experiment(client.create_experiment("gone"))
    result = run_module(*FM, "--tracking-uri", store, "--experiment", "gone")
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert "--experiment: got 'gone'" in line and "mlflow experiments restore" in line
    assert result.stdout == ""  # refused before the warm-up, before anything ran
    assert client.search_runs([client.get_experiment_by_name("gone").experiment_id]) == []

    storage = f"sqlite:///{tmp_path}/optuna.db"
    swept = run_module(
        "mltrack.cli", "sweep", "experiments.fashion_mnist_precision", "--dataset", "digits",
        "--storage", storage, "--tracking-uri", store, "--experiment", "gone", "--trials", "1",
    )  # fmt: skip
    assert swept.returncode == 2, swept.stderr[-2000:]
    [line] = swept.stderr.strip().splitlines()
    assert "--experiment: got 'gone'" in line
    assert not (tmp_path / "optuna.db").exists() or not optuna.get_all_study_names(storage)


def test_an_experiment_deleted_while_a_run_trains_keeps_its_records_and_says_how(
    tmp_path, store, client
):
    """The refusal is not an outage: no 60 s wait at the end, exit 1 with a last line that
    says the records were kept and why; ``mltrack sync`` says how to restore or discard."""
    # An outage would hold the run's end for this long: the refusal must not.
    env = {**env_for(tmp_path), "MLTRACK_END_TIMEOUT_S": "900"}
    sync = [sys.executable, "-m", "mltrack.cli", "sync"]
    training = start_training(
        tmp_path, "--epochs", "60", "--synthetic-size", "256", "--tracking-uri", store,
        "--no-export", env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_until(lambda: epochs_logged(client) >= 2, 300, "two epochs in the store")
    experiment = client.get_experiment_by_name("cifar_amp").experiment_id
    client.delete_experiment(experiment)
    _, err = training.communicate(timeout=400)  # the 60 epochs take about 20 s
    assert training.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "refused run(s)" in last and "kept in the journal" in last, err[-2000:]
    assert "Traceback" not in err

    def sync_(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*sync, *args], env=env, capture_output=True, text=True)

    refused = sync_()
    assert refused.returncode == 1
    assert f"mlflow experiments restore --experiment-id {experiment}" in refused.stdout
    assert "--discard" in refused.stdout
    client.restore_experiment(experiment)
    restored = sync_()
    assert restored.returncode == 0, restored.stdout
    [run] = client.search_runs([experiment])
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 2
    assert sync_("--discard", "0" * 32).returncode == 2  # no such journal: one line, exit 2


def test_sync_discard_drops_a_refused_journal(tmp_path, store, client, monkeypatch):
    monkeypatch.setenv("MLTRACK_SPOOL_DIR", str(tmp_path / "spool"))
    with start_run("doomed", tracking_uri=store) as run:
        run.log_metrics({"loss": 1.0}, step=0)
        run.flush()
        client.delete_run(run.run_id)
        run.log_metrics({"loss": 0.5}, step=1)
    assert run.refused and "active" in run.refused
    assert REFUSED[run.run_id] == run.refused
    [journal] = spool.pending(tmp_path / "spool")
    assert spool.run_of(journal) == run.run_id
    assert f"mlflow runs restore --run-id {run.run_id}" in spool.refused_advice(
        journal, run.refused
    )
    assert cli.main(["sync", "--discard", run.run_id]) == 0
    assert spool.pending(tmp_path / "spool") == []
