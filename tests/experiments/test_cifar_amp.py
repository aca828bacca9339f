"""``python -m experiments.cifar_amp`` end to end, in subprocesses, against the real store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from tests.conftest import (
    all_runs,
    check_efficiency,
    env_for,
    epochs_logged,
    reload_without_mltrack,
    start_training,
    study_runs,
    verified_children,
    wait_until,
)

SMALL = ["--dataset", "synthetic", "--synthetic-size", "256", "--batch-size", "64"]

FAIL_AFTER_EPOCH_1 = """
import sys
from mltrack import keras as mk
original = mk.Callback.on_epoch_end
def on_epoch_end(self, epoch, logs=None):
    original(self, epoch, logs)
    if epoch == 1:
        raise RuntimeError("injected failure after epoch 1")
mk.Callback.on_epoch_end = on_epoch_end
from experiments import cifar_amp
sys.exit(cifar_amp.main(sys.argv[1:]))
"""


def steps(client, run, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, key)]


def test_synthetic_two_epochs_leaves_one_complete_verified_run(
    run_module, store, tmp_path, monkeypatch
):
    result = run_module("experiments.cifar_amp", *SMALL, "--epochs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    # No framework warning, export included, and no MLflow INFO line creating the new store
    # (the client below opens it only now).
    assert result.stderr == "", result.stderr[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # as the client fixture does
    client = MlflowClient(tracking_uri=store)
    assert "| precision |" in result.stdout
    banner = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if any(word in line for word in ("oneDNN", "cuInit", "absl", "cuda_", "INFO mlflow"))
    ]
    assert not banner, banner  # a clean start: no framework banner unless --verbose
    # The hint is a command that works from here, right after the README's set-up.
    hint = result.stdout.split("Browse them with:")[1].split()
    assert hint[1] == "ui", hint
    ui_help = subprocess.run(
        [hint[0], "ui", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert ui_help.returncode == 0, ui_help.stderr
    [run] = all_runs(client)
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
    params = run.data.params
    # The seed's recipe by default: its policy, optimizer and model, deviations written down.
    assert params["precision_requested"] == params["precision"] == "mixed_fp16"
    assert params["model"] == "mlp" and params["optimizer"] == "sgd"
    assert params["learning_rate"] == "0.01"
    assert "mixed_floats16" in params["seed.deviations"]
    assert params["batch_size"] == "64" and params["effective_batch_size"] == "64"
    assert params["dataset.name"] == "synthetic" and params["dataset.train_size"] == "256"
    assert params["dataset.hash"]
    for key in (
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "epoch_wall_s",
        "epoch_user_cpu_s",
        "epoch_system_cpu_s",
        "samples_per_s",
        "peak_rss_mb",
    ):
        assert steps(client, run, key) == [0, 1], key
    for key in (
        "total_wall_s",
        "total_user_cpu_s",
        "total_system_cpu_s",
        "total_cpu_s",
        "warmup_epoch_wall_s",
        "test_accuracy",
    ):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    seed = {"model/model.json", "model/model.weights.h5", "model/summary.txt"}
    assert seed | {"model/MLmodel", "model/code", "model/input_example.json"} <= artifacts
    assert run.data.tags["reload_formats"] == "keras,pyfunc"
    assert run.data.tags["reload_ok"] == "true"
    assert run.data.metrics["reload_max_abs_diff"] <= float(run.data.tags["reload_tolerance"])
    architecture = json.loads(
        Path(client.download_artifacts(run.info.run_id, "model/model.json")).read_text()
    )
    layers = architecture["config"]["layers"]
    assert [x["config"]["units"] for x in layers if x["class_name"] == "Dense"] == [3000, 1000, 10]
    assert layers[-1]["class_name"] == "Activation"
    assert layers[-1]["config"]["activation"] == "sigmoid"
    assert layers[-1]["config"]["dtype"]["config"]["name"] == "float32"
    assert layers[1]["config"]["dtype"]["config"]["name"] == "mixed_float16"
    h5 = Path(client.download_artifacts(run.info.run_id, "model/model.weights.h5"))
    assert h5.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # really HDF5
    check_efficiency(client, run, "tensorflow")
    lineage = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(lineage) == {"training", "evaluation"} and all(d.digest for d in lineage.values())
    reload_without_mltrack(client, run.info.run_id, "keras", tmp_path)
    # The export is the run's MLflow 3 logged model, linked to its final metrics; its files
    # are stored once, in the model, not again among the run's artifacts.
    [model] = client.search_logged_models([run.info.experiment_id])
    assert model.source_run_id == run.info.run_id and model.status.name == "READY"
    assert {"test_accuracy", "total_wall_s"} <= {m.key for m in model.metrics}
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    own = Path(run.info.artifact_uri.removeprefix("file://"))
    location = Path(model.artifact_location.removeprefix("file://"))
    assert not (own / "model").exists() and (location / "MLmodel").exists()
    import mlflow

    predict = mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict
    assert predict(np.zeros((3, 32, 32, 3), np.uint8)).shape == (3, 10)


def test_accumulation_and_per_step_logging(run_module, client):
    result = run_module(
        "experiments.cifar_amp",
        *SMALL,
        "--epochs",
        "1",
        "--precision",
        "fp32",
        "--accumulation-steps",
        "2",
        "--log-every-n-steps",
        "1",
        "--no-export",  # the export has tests of its own
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    assert run.data.params["effective_batch_size"] == "128"
    assert steps(client, run, "step/loss") == [0, 1, 2, 3]  # 256 samples / 64 per step


def test_study_over_precisions_makes_parent_and_children(run_module, client):
    result = run_module(
        "experiments.cifar_amp",
        *(*SMALL, "--epochs", "1", "--precisions", "fp32,mixed_bf16", "--no-export"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = study_runs(client)
    assert sorted(r.data.params["precision"] for r in children) == ["fp32", "mixed_bf16"]
    assert all(r.info.status == "FINISHED" for r in [parent, *children])
    table = Path(client.download_artifacts(parent.info.run_id, "results.md")).read_text()
    assert "| fp32 | 1 | completed 1 |" in table and "| mixed_bf16 | 1 |" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "fp17"], "--precision: got 'fp17', expected one of"),
        (["--batch-size", "0"], "--batch-size: got 0, expected an integer >= 1"),
        (["--epochs", "-1"], "--epochs: got -1, expected an integer >= 1"),
        (["--data-dir", "/nonexistent"], "--data-dir: got '/nonexistent', expected an existing"),
        (["--dataset", "cifar10", "--data-dir", "."], "--data-dir: cifar10 not found in ."),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_run(run_module, tmp_path, args, message):
    result = run_module("experiments.cifar_amp", *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_exception_mid_training_fails_the_run_with_finished_epochs(tmp_path, client):
    result = subprocess.run(
        [sys.executable, "-c", FAIL_AFTER_EPOCH_1, *SMALL, "--epochs", "5"],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1 and "injected failure" in result.stderr
    [run] = all_runs(client)
    assert run.info.status == "FAILED" and run.data.tags["outcome"] == "failed"
    assert "injected failure after epoch 1" in run.data.tags["error"]
    assert steps(client, run, "loss") == [0, 1]
    assert steps(client, run, "epoch_wall_s") == [0, 1]


def test_sigterm_kills_the_run(tmp_path, client):
    proc = start_training(
        tmp_path, "--synthetic-size", "1024", "--epochs", "200", stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: epochs_logged(client) >= 1, 180, "the first epoch in the store")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    [run] = all_runs(client)
    assert (run.info.status, run.data.tags["outcome"]) == ("KILLED", "killed")
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 1


def test_bf16_and_mixed_fp16_finish_and_their_exports_reload(run_module, client):
    result = run_module(
        "experiments.cifar_amp", *SMALL, "--epochs", "1", "--precisions", "bf16,mixed_fp16"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ran = verified_children(client, {"bf16", "mixed_fp16"})
    assert ran["bf16"].data.tags["keras.variable_dtypes"] == "bfloat16"
    assert ran["mixed_fp16"].data.tags["keras.hidden_compute_dtype"] == "float16"


def test_compile_is_a_technique_logged_and_compared(run_module, client, store, capsys):
    """Issue 29: --compile (XLA for Keras) runs, its one-off cost is logged apart from the
    steady throughput, and compare puts compiled and eager side by side with the speed-up."""
    args = [*SMALL, "--epochs", "3", "--precision", "fp32", "--no-export"]
    for extra in (["--compile"], []):
        result = run_module("experiments.cifar_amp", *args, *extra, "--tracking-uri", store)
        assert result.returncode == 0, result.stderr[-3000:]
    compiled, eager = sorted(all_runs(client), key=lambda r: r.data.params["compile"] != "True")
    assert compiled.data.params["compile"] == "True" and eager.data.params["compile"] == "False"
    assert compiled.data.tags["keras.jit_compile"] == "true"
    assert eager.data.tags["keras.jit_compile"] == "false"  # Keras' "auto" is off on a CPU
    assert compiled.data.metrics["compile_wall_s"] >= 0
    assert "compile_wall_s" not in eager.data.metrics
    from mltrack import cli

    assert cli.main(["compare", "--tracking-uri", store, "--group-by", "compile"]) == 0
    out = capsys.readouterr().out
    speed = out.split("### Speed and efficiency by compile")[1].split("###")[0]
    header = next(line for line in speed.splitlines() if line.startswith("| compile | runs |"))
    assert "| speed-up | one-off compile |" in header
    rates = {
        r.data.params["compile"]: r.data.metrics["steady_samples_per_s"] for r in (compiled, eager)
    }
    first = next(iter(k for k in ("True", "False") if f"| {k} | 1 |" in out))
    ratio = rates["False" if first == "True" else "True"] / rates[first]
    assert f"{ratio:.2f}×" in out


def test_a_keras_run_killed_mid_training_resumes_with_its_weights(run_module, client, tmp_path):
    """Issue 29, Keras' side: --resume goes on at the epoch after the last logged one
    (initial_epoch), from the weights of that epoch's checkpoint."""
    import os

    from tests.conftest import env_for, wait_until

    args = ["--dataset", "synthetic", "--synthetic-size", "4096", "--batch-size", "64",
            "--epochs", "4", "--precision", "fp32", "--no-export", "--checkpoint"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.cifar_amp", *args], cwd=tmp_path,
        env=env_for(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def logged() -> int:
            runs = all_runs(client)
            return len(client.get_metric_history(runs[0].info.run_id, "loss")) if runs else 0

        wait_until(lambda: logged() >= 1, 600, "an epoch logged")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(60)
    [run] = all_runs(client)
    # Its writer outlives it and ends the run KILLED within seconds (issue 28); resumable.
    wait_until(lambda: all_runs(client)[0].info.status == "KILLED", 60, "the run KILLED")
    done = logged()
    assert done < 4
    result = run_module("experiments.cifar_amp", *args, "--resume", run.info.run_id)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    assert run.info.status == "FINISHED" and run.data.tags["mltrack.resumed"] == "1"
    points = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in points] == [0, 1, 2, 3]
    # From the checkpoint's weights: the first resumed epoch trains on from where training
    # was (fresh weights, the same seed, would repeat epoch 0's loss).
    assert points[done].value < 0.99 * points[0].value, [m.value for m in points]
