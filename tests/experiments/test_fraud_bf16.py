"""Seed 000 offline: fp32 vs bf16 on simulated PaySim with the seed's recipe (7 columns,
SMOTE, Conv1D), the Inferences table from the runs and the seed's published one beside it."""

from __future__ import annotations

import json
from pathlib import Path

from mltrack import cli
from mltrack.compare.report import seconds
from mltrack.studies.data import paysim
from tests.conftest import check_efficiency, study_runs


def test_simulated_fp32_vs_bf16_with_inferences_table(run_module, client, store, capsys):
    result = run_module(
        "experiments.fraud_bf16",
        "--dataset",
        "simulated",
        "--rows",
        "20000",
        "--epochs",
        "2",
        "--batch-size",
        "256",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr[-3000:]  # no framework warning, export included
    parent, runs = study_runs(client)
    children = {r.data.params["precision"]: r for r in runs}
    assert set(children) == {"fp32", "mixed_bf16"}
    bf16 = children["mixed_bf16"]
    assert bf16.data.tags["keras.variable_dtypes"] == "float32"
    assert bf16.data.tags["keras.hidden_compute_dtype"] == "bfloat16"
    assert children["fp32"].data.tags["keras.hidden_compute_dtype"] == "float32"
    for run in children.values():
        assert run.info.status == "FINISHED" and run.data.tags["reload_ok"] == "true"
        check_efficiency(client, run, "tensorflow")  # issue 31: 0 < mfu <= 1 in each dtype
        params = run.data.params
        assert params["imbalance"] == "smote" and params["features"] == "seed"
        assert params["model"] == "conv1d" and "never trained" in params["seed.deviations"]
        # SMOTE made the training split even: as many synthetic positives as negatives.
        rows, positives = int(params["train_rows_after_balancing"]), int(params["positives_train"])
        assert rows == 2 * positives and rows > 0.75 * 20000
        architecture = json.loads(
            Path(client.download_artifacts(run.info.run_id, "model/model.json")).read_text()
        )
        layers = architecture["config"]["layers"]
        assert [x["class_name"] for x in layers].count("Conv1D") == 2
        assert layers[-1]["config"]["activation"] == "relu"  # the seed's output, odd as it is
        for key in ("val_f1", "val_pr_auc", "val_roc_auc", "val_precision", "val_recall"):
            assert len(client.get_metric_history(run.info.run_id, key)) == 2, key
        assert 0.0 <= run.data.metrics["test_pr_auc"] <= 1.0

    table = Path(client.download_artifacts(parent.info.run_id, "results.md")).read_text()
    assert "| fp32 (n=1) | mixed_bf16 (n=1) | Δ mixed_bf16 − fp32 |" in table
    for label in (
        "User CPU time",
        "System CPU time",
        "Total CPU time",
        "Wall time",
        "Accuracy",
        "Validation loss",
        "F1",
        "PR-AUC",
    ):
        assert f"| {label} |" in table
    # The wall-time delta is the difference of the two runs' logged totals.
    wall = {p: r.data.metrics["total_wall_s"] for p, r in children.items()}
    delta = wall["mixed_bf16"] - wall["fp32"]
    assert f"({wall['mixed_bf16'] / wall['fp32'] - 1:+.1%})" in table, (delta, table)

    # mltrack compare regenerates the seed-000 rows from the store alone, same numbers.
    assert (
        cli.main(
            ["compare", "--experiment", "fraud_bf16", "--baseline", "fp32", "--tracking-uri", store]
        )
        == 0
    )
    out = capsys.readouterr().out
    user = {p: r.data.metrics["total_user_cpu_s"] for p, r in children.items()}
    assert f"| User CPU time | {seconds(user['fp32'])} | {seconds(user['mixed_bf16'])} |" in out
    for row in table.splitlines()[2:8]:  # the seed's six rows, identical in both
        assert row in out, row
    # The seed's published Inferences beside the measured ones, CPU-time ratios in both.
    cpu = {p: r.data.metrics["total_cpu_s"] for p, r in children.items()}
    line = next(x for x in out.splitlines() if x.startswith("| Model #2 (BF16) | total_cpu_s"))
    assert f"| {129 / 123:.2f}× | {cpu['mixed_bf16'] / cpu['fp32']:.2f}× |" in line
    assert "| Model #1 (FP32) | accuracy | 0.9533 |" in out


def test_bad_csv_exits_2_before_any_run(run_module, tmp_path):
    (tmp_path / paysim.FILENAME).write_text("step,type,amount\n1,PAYMENT,abc\n")
    result = run_module("experiments.fraud_bf16", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "missing column(s) nameOrig" in result.stderr
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
