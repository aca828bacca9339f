"""What a store refuses for good (a deleted experiment or run) is said in one line (issue 18)."""

from __future__ import annotations

import optuna
from mlflow import MlflowClient

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
