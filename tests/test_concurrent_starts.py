"""Many processes opening a store or a study storage that does not exist yet (issue 18).

Real processes on real sqlite files and a real PostgreSQL server, all started at once: MLflow
and Optuna create their tables without a lock, so before ``mltrack.tracking.creation`` these crashed
with alembic tracebacks and left a broken database, and sweep workers made a parent run each.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
from mlflow import MlflowClient

from tests.conftest import env_for, study_runs
from tests.postgres import postgres_server
from tests.test_sweep_runs import SWEEP

TRAIN = [
    sys.executable,
    "-m",
    "experiments.fashion_mnist_precision",
    "--dataset",
    "digits",
    "--no-export",
    "--epochs",
    "1",
    "--precision",
    "fp32",
]
SWEEP_ARGS = ["--epochs", "1", "--sampler", "random", "--pruner", "none"]
SWEEP_ARGS += ["--space-precision", "fp32", "--space-batch-size", "64"]


def together(tmp_path: Path, commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Start every command at once; wait for all; return each one's result."""
    env = env_for(tmp_path)
    started = [
        subprocess.Popen(
            c, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in commands
    ]
    results = []
    for process, command in zip(started, commands, strict=True):
        out, err = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return results


def assert_ok(results: list[subprocess.CompletedProcess[str]]) -> None:
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr, r.stderr[-3000:]


def test_three_trainings_started_together_create_one_good_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/new/mlflow.db"
    results = together(
        tmp_path, [[*TRAIN, "--tracking-uri", uri, "--seed", str(seed)] for seed in (1, 2, 3)]
    )
    assert_ok(results)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fashion_mnist_precision")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) >= 3 and {r.info.status for r in runs} == {"FINISHED"}
    db = sqlite3.connect(tmp_path / "new" / "mlflow.db")
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert not [n for n in names if n.startswith("_alembic_tmp_")]
    compare = subprocess.run(
        [sys.executable, "-m", "mltrack.cli", "compare", "--tracking-uri", uri, "--format", "csv"],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compare.returncode == 0, compare.stderr
    assert len(compare.stdout.strip().splitlines()) > 3


def test_two_sweep_workers_started_together_share_one_parent(tmp_path):
    tracking = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    worker = [*SWEEP, *SWEEP_ARGS, "--trials", "2", "--storage", storage]
    worker += ["--tracking-uri", tracking, "--study", "together"]
    assert_ok(together(tmp_path, [worker, [*worker, "--sampler-seed", "1"]]))
    study = optuna.load_study(study_name="together", storage=storage)
    assert len(study.trials) >= 2
    parent, children = study_runs(MlflowClient(tracking_uri=tracking))
    assert len(children) == len(study.trials)
    assert parent.info.status == "FINISHED"
    assert "error" not in parent.data.tags


def test_three_workers_started_together_on_a_new_postgresql_database(tmp_path):
    with postgres_server() as server:
        storage, tracking = f"{server}/optuna", f"{server}/mlflow"
        worker = [*SWEEP, *SWEEP_ARGS, "--trials", "3", "--storage", storage]
        worker += ["--tracking-uri", tracking, "--study", "together"]
        seeds = [[*worker, "--sampler-seed", str(seed)] for seed in range(3)]
        assert_ok(together(tmp_path, seeds))
        study = optuna.load_study(study_name="together", storage=storage)
        parent, children = study_runs(MlflowClient(tracking_uri=tracking))
        assert len(children) == len(study.trials) >= 3
        assert parent.info.status == "FINISHED"


def test_a_store_left_half_migrated_is_one_line_saying_how_to_repair_it(tmp_path, run_module):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    MlflowClient(tracking_uri=uri).search_experiments()  # a good store...
    db = sqlite3.connect(tmp_path / "mlruns" / "mlflow.db")
    # ... as the race left it: a batch migration's copy, and the version before that step.
    db.execute("CREATE TABLE _alembic_tmp_runs (run_uuid VARCHAR(32))")
    db.execute("UPDATE alembic_version SET version_num = 'c8d9e0f1a2b3'")
    db.commit()
    result = run_module(*TRAIN[2:], "--tracking-uri", uri)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert "half-migrated" in line and "DROP TABLE _alembic_tmp_runs" in line
    assert "mlflow db upgrade" in line
