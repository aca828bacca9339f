"""The seed-002 study on offline digits: fp16 diverges as a result, not a crash; the seed's
protocol (warm-up, no validation in the timed fit, training on through NaN) by default."""

from __future__ import annotations

import statistics
from pathlib import Path

from mltrack import cli
from tests.conftest import (
    check_efficiency,
    reload_without_mltrack,
    study_runs,
    verified_children,
)


def test_seed_protocol_trains_fp16_on_nan_and_sets_the_published_table_beside(
    run_module, client, store, capsys
):
    result = run_module(
        "experiments.fashion_mnist_precision",
        *("--dataset", "digits", "--precisions", "fp32,fp16", "--repeats", "2"),
        *("--epochs", "3", "--no-export"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warm-up (untimed, not logged as a run): fp32," in result.stdout
    parent, children = study_runs(client)
    assert parent.data.params["warmup"] == "fp32" and parent.data.params["protocol"] == "seed"
    fp16 = [r for r in children if r.data.params["precision"] == "fp16"]
    fp32 = [r for r in children if r.data.params["precision"] == "fp32"]
    for r in fp16:  # the seed's half row: every epoch trained on NaN, then tested
        assert r.data.tags["outcome"] == "diverged" and r.info.status == "FAILED"
        assert r.data.tags["diverged_trained_on"] == "true"
        assert len(client.get_metric_history(r.info.run_id, "loss")) == 3
        assert abs(r.data.metrics["test_accuracy"] - 0.10) < 0.03, r.data.metrics
    for r in children:  # the timed fit validated nothing; test metrics after it
        assert "val_loss" not in r.data.metrics and r.data.metrics["val_wall_s"] == 0
        assert "test_accuracy" in r.data.metrics
    # The study table averages the fp16 runs' time and accuracy, as the seed's did.
    table = Path(client.download_artifacts(parent.info.run_id, "results.md")).read_text()
    wall = [r.data.metrics["total_wall_s"] for r in fp16]
    fp16_row = next(line for line in table.splitlines() if line.startswith("| fp16 | 2 |"))
    assert f"{statistics.fmean(wall):.4g} ± {statistics.stdev(wall):.2g}" in fp16_row

    # compare: the seed's published figures beside the measured ones, ratios to fp32 in both.
    assert (
        cli.main(["compare", "--experiment", "fashion_mnist_precision", "--tracking-uri", store])
        == 0
    )
    out = capsys.readouterr().out
    single = next(line for line in out.splitlines() if line.startswith("| single | total_wall_s"))
    half = next(line for line in out.splitlines() if line.startswith("| half | total_wall_s"))
    measured = {
        p: statistics.fmean(r.data.metrics["total_wall_s"] for r in rs)
        for p, rs in (("fp32", fp32), ("fp16", fp16))
    }
    assert "| 39.51s |" in single and "| 1.00× | 1.00× |" in single
    assert f"| {40.641441424687706 / 39.506595293680824:.2f}× |" in half
    assert f"| {measured['fp16'] / measured['fp32']:.2f}× |" in half
    accuracy = next(line for line in out.splitlines() if line.startswith("| single | test_acc"))
    fp32_accuracy = statistics.fmean(r.data.metrics["test_accuracy"] for r in fp32)
    assert f"| 0.9026 | {fp32_accuracy:.4f} (n=2) |" in accuracy
    assert "| double | total_wall_s | 1m 14s | – |" in out  # no fp64 run here
    assert "trained every epoch on NaN" in out
    assert "the seed measured on fashion_mnist, these runs on digits" in out


def test_mltrack_protocol_stops_at_the_first_nan(run_module, client, store, capsys):
    result = run_module(
        "experiments.fashion_mnist_precision",
        "--dataset",
        "digits",
        "--precisions",
        "fp32,fp16,mixed_bf16",
        "--repeats",
        "2",
        "--protocol",
        "mltrack",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = study_runs(client)
    assert len(children) == 6 and parent.info.status == "FINISHED"
    by_precision: dict[str, list] = {}
    for r in children:
        by_precision.setdefault(r.data.params["precision"], []).append(r)
    assert sorted(r.data.params["seed"] for r in by_precision["fp32"]) == ["0", "1"]

    for r in by_precision["fp16"]:
        assert r.data.tags["outcome"] == "diverged", r.data.tags
        assert r.info.status == "FAILED"  # a diverged run is a failed one, as in a sweep
        assert r.data.tags["export"] == "skipped: the run diverged"
        assert int(r.data.tags["diverged_step"]) >= 0
        assert r.data.tags["keras.variable_dtypes"] == "float16"
        # Training stopped at the divergence: the loss history ends with the NaN epoch.
        losses = client.get_metric_history(r.info.run_id, "loss")
        assert len(losses) == int(r.data.tags["diverged_epoch"]) + 1
    for r in [*by_precision["fp32"], *by_precision["mixed_bf16"]]:
        assert r.info.status == "FINISHED"
    for r in by_precision["fp32"]:
        assert r.data.tags["outcome"] == "completed"
        assert r.data.metrics["test_accuracy"] >= 0.90, r.data.metrics
        assert r.data.tags["reload_ok"] == "true"
    for r in by_precision["mixed_bf16"]:
        assert r.data.tags["outcome"] == "completed"
        assert r.data.tags["keras.hidden_compute_dtype"] == "bfloat16"

    table = Path(client.download_artifacts(parent.info.run_id, "results.md")).read_text()
    assert "| fp16 | 2 | diverged 2 | – |" in table  # diverged runs are not averaged in
    fp32_row = next(line for line in table.splitlines() if line.startswith("| fp32 |"))
    assert fp32_row.count("±") == 4  # mean ± spread of time, CPU, accuracy and loss
    assert table in result.stdout

    # mltrack compare regenerates the seed-002 table from the store alone.
    assert (
        cli.main(["compare", "--experiment", "fashion_mnist_precision", "--tracking-uri", store])
        == 0
    )
    out = capsys.readouterr().out
    accuracy = [r.data.metrics["test_accuracy"] for r in by_precision["fp32"]]
    wall = [r.data.metrics["total_wall_s"] for r in by_precision["fp32"]]
    expected = (
        f"| fp32 | 2 | completed 2 | {statistics.fmean(wall):.4g} ± {statistics.stdev(wall):.2g} |"
    )
    assert expected in out
    assert f"{statistics.fmean(accuracy):.4g} ± {statistics.stdev(accuracy):.2g}" in out
    assert "| fp16 | 2 | diverged 2 | – |" in out
    assert "| 1 | " in out and "| 1.00× |" in out  # the one machine leads its leaderboard


def test_bf16_and_mixed_fp16_finish_and_their_exports_reload(run_module, client, tmp_path):
    result = run_module(
        "experiments.fashion_mnist_precision",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--repeats",
        "1",
        "--precisions",
        "mixed_fp16,fp32,bf16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr[-3000:]  # no framework warning, export included
    # Keras' Adam under pure bf16 makes zero steps (beta_2 rounds to 1.0): called out.
    assert "bf16: the training loss of 1 run(s) did not move" in result.stdout
    assert "fp32: the training loss" not in result.stdout
    ran = verified_children(client, {"bf16", "mixed_fp16", "fp32"})
    for run in ran.values():  # MFU <= 1 whatever the dtype's peak (issue 19: mixed_fp16 was 6.9)
        check_efficiency(client, run, "tensorflow")
    # Raw pixels, uint8 or float 0-255 (the export scales them; it refused uint8 before).
    reload_without_mltrack(client, ran["fp32"].info.run_id, "keras", tmp_path, (28, 28, 1))
    assert ran["bf16"].data.tags["keras.variable_dtypes"] == "bfloat16"
    assert ran["mixed_fp16"].data.tags["keras.hidden_compute_dtype"] == "float16"
