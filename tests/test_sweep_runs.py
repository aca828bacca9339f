"""Real sweeps over experiments.fashion_mnist_precision on offline digits.

One worker on sqlite; then three workers on a real PostgreSQL, one of them SIGKILLed mid-trial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from mltrack.sweep import counted
from tests.conftest import all_runs, env_for, wait_until
from tests.postgres import postgres_server

SWEEP = [
    sys.executable,
    "-m",
    "mltrack.cli",
    "sweep",
    "experiments.fashion_mnist_precision",
    "--dataset",
    "digits",
    "--no-export",
]
STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


def sweep(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SWEEP, *args],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_six_trials_one_parent_and_statuses_matching_optuna(tmp_path, client):
    # fp16 is in the space so some trials diverge: they must FAIL, never be crowned best.
    result = sweep(
        tmp_path,
        "--epochs",
        "3",
        "--trials",
        "6",
        "--sampler",
        "random",
        "--sampler-seed",
        "3",
        "--space-precision",
        "fp32,fp16,mixed_bf16",
        "--space-batch-size",
        "16,32",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(
        study_name="fashion_mnist_precision", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db"
    )
    trials = study.get_trials()
    assert len(trials) == 6 == counted(trials)
    runs = all_runs(client)
    [parent] = [r for r in runs if r.data.tags.get("mltrack.role") == "study"]
    children = {r.data.tags["optuna.trial"]: r for r in runs if r is not parent}
    assert len(children) == 6
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    for trial in trials:
        run = children[str(trial.number)]
        assert run.info.status == STATUS[trial.state], (trial.number, trial.state)
        assert run.data.tags["outcome"] == trial.user_attrs["outcome"]
        assert run.data.params["precision"] == trial.params["precision"]
        if trial.params["precision"] == "fp16":
            assert (trial.state, run.data.tags["outcome"]) == (TrialState.FAIL, "diverged")
    best = study.best_trial
    assert best.params["precision"] != "fp16"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_trial"] == str(best.number)
    assert children[str(best.number)].data.tags["optuna.best"] == "true"
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert "optuna/optimization_history.png" in plots
    # Resuming the same study continues it rather than starting over.
    space = ["--space-precision", "fp32,fp16,mixed_bf16", "--space-batch-size", "16,32"]
    again = sweep(tmp_path, "--epochs", "1", "--trials", "7", "--sampler", "random", *space)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(study.get_trials()) == 7
    changed = sweep(tmp_path, "--epochs", "1", "--trials", "8", "--space-batch-size", "8")
    assert changed.returncode == 2 and "or a new --study name" in changed.stderr
    assert len(study.get_trials()) == 7
    assert len([r for r in all_runs(client) if r.data.tags.get("mltrack.role") == "study"]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["experiments.nope"], "module: got 'experiments.nope', expected an importable experiment"),
        (["--space-precision", "fp32,fp8"], "--space-precision: got 'fp8', expected one of"),
        (
            ["--storage", "postgresql://nobody@127.0.0.1:1/none"],
            "--storage: got 'postgresql://nobody@127.0.0.1:1/",
        ),
        (["--objective", "accuracy"], "--objective: got 'accuracy', expected METRIC:max"),
        (["--epochs", "0"], "--epochs: got 0, expected an integer >= 1"),
    ],
)
def test_bad_input_exits_2_with_no_study_and_no_run(tmp_path, args, message):
    command = list(SWEEP)
    if args[0].startswith("experiments."):
        command[4] = args[0]
        args = []
    result = subprocess.run(
        [*command, *args],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
    optuna_db = tmp_path / "mlruns" / "optuna.db"
    if optuna_db.exists():
        assert optuna.get_all_study_names(f"sqlite:///{optuna_db}") == []


def test_three_postgres_workers_one_killed_mid_trial(tmp_path):
    with postgres_server() as server:
        storage, tracking = f"{server}/optuna", f"{server}/mlflow"
        # One storage (one connection pool) for all the polling below; it also creates the
        # schema once, before the workers race to.
        shared = optuna.storages.RDBStorage(storage)
        client = MlflowClient(tracking_uri=tracking)
        client.search_experiments()
        args = [
            "--epochs",
            "3",
            "--trials",
            "6",
            "--storage",
            storage,
            "--study",
            "shared",
            "--tracking-uri",
            tracking,
            "--sampler",
            "random",
            "--pruner",
            "none",
            "--space-precision",
            "fp32,mixed_bf16",
            "--heartbeat-interval",
            "1",
            "--grace-period",
            "20",
        ]
        env = env_for(tmp_path)

        def start(seed: int) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [*SWEEP, *args, "--sampler-seed", str(seed)],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

        def study() -> optuna.Study:
            return optuna.load_study(study_name="shared", storage=shared)

        workers = [start(0)]
        wait_until(
            lambda: (
                "shared" in optuna.get_all_study_names(shared)
                and "mlflow_parent_run_id" in study().user_attrs
            ),
            180,
            "the first worker",
        )
        workers += [start(1), start(2)]
        victim = workers[1]

        def victim_mid_trial() -> bool:
            for t in study().get_trials(states=(TrialState.RUNNING,)):
                if (
                    t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
                    and "mlflow_run_id" in t.user_attrs
                    and client.get_metric_history(t.user_attrs["mlflow_run_id"], "loss")
                ):
                    return True
            return False

        wait_until(victim_mid_trial, 300, "the victim worker to be mid-trial")
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        outputs = {}
        for w in (workers[0], workers[2]):
            outputs[w.pid] = w.communicate(timeout=500)[0]
            assert w.returncode == 0, outputs[w.pid][-3000:]
        victim.wait(timeout=30)

        trials = study().get_trials()
        numbers = [t.number for t in trials]
        assert len(numbers) == len(set(numbers))
        [dead] = [
            t
            for t in trials
            if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
            and t.state == TrialState.FAIL
        ]
        assert "outcome" not in dead.user_attrs  # failed by its heartbeat, not by the objective
        [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
        assert retry.state == TrialState.COMPLETE and retry.params == dead.params
        assert 6 <= counted(trials) <= 8  # the count; a busy worker may finish one extra
        assert dead.datetime_complete.timestamp() >= killed_at - 1
        # MLflow agrees: the dead trial's run is FAILED with the reason, the retry FINISHED.
        dead_run = client.get_run(dead.user_attrs["mlflow_run_id"])
        assert dead_run.info.status == "FAILED"
        assert "heartbeats" in dead_run.data.tags["error"]
        retry_run = client.get_run(retry.user_attrs["mlflow_run_id"])
        assert retry_run.info.status == "FINISHED"
        assert retry_run.data.tags["optuna.retry_of"] == str(dead.number)
        experiment = client.get_experiment_by_name("fashion_mnist_precision")
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("mltrack.role") == "study"]
        assert len(parents) == 1
        children = [
            r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
        ]
        assert len(children) == len([t for t in trials if t.state != TrialState.WAITING])
