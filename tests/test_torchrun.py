"""One run per distributed job, for real: ``torchrun`` with gloo on this CPU, two processes or
two "nodes" (two launchers on 127.0.0.1), faults on one rank (issue 27)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, all_runs, env_for, wait_until
from tests.test_cli import free_port
from tests.test_own_training import docs_examples

pytestmark = pytest.mark.torch

JOB = str(ROOT / "tests" / "ddp_job.py")


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def launch(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600):
    return subprocess.run(
        torchrun("--standalone", "--nproc-per-node", "2", *args),
        cwd=tmp_path,
        env={**env_for(tmp_path), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job(tmp_path: Path, store: str, *args: str):
    return launch(tmp_path, JOB, "--tracking-uri", store, "--out", str(tmp_path), *args)


def history(client, run, key: str) -> list[float]:
    points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
    return [m.value for m in points]


def test_cifar_torch_under_torchrun_is_one_run_whose_test_accuracy_is_the_exported_models(
    tmp_path, store, client
):
    size = 64
    result = launch(
        tmp_path,
        *("-m", "experiments.cifar_torch", "--model", "resnet50", "--dataset", "synthetic"),
        *("--synthetic-size", str(size), "--batch-size", "16", "--epochs", "1"),
        *("--precision", "fp32", "--num-workers", "0", "--tracking-uri", store),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED" and tags["outcome"] == "completed"
    assert (params["world_size"], params["nodes"], params["processes_per_node"]) == ("2", "1", "2")
    assert (params["distributed.backend"], params["distributed.launcher"]) == ("gloo", "torchrun")
    assert params["effective_batch_size"] == "32"  # 16 a rank x 2 ranks
    assert tags["distributed.weights_identical"] == "true", tags["distributed.weights_sha1"]
    assert tags["distributed.hardware"].startswith("2 x ")
    # Global throughput: both ranks' samples over the slower rank's training time.
    assert metrics["samples_per_s"] == pytest.approx(size / metrics["train_wall_s"], rel=0.05)
    assert metrics["rank_time_ratio"] >= 1 and metrics["slowest_rank"] in (0.0, 1.0)
    assert result.stdout.count("epoch 1/1") == 1  # rank 1 prints nothing
    assert tags["reload_ok"] == "true"

    # One process evaluating the exported model on the whole test set gets the run's figure.
    from mltrack.studies.data import synthetic

    data = synthetic.images((32, 32, 3), 10, size, max(size // 4, 8), 0)
    folder = client.download_artifacts(run.info.run_id, "model", str(tmp_path / "exported"))
    script = (
        "import sys, numpy as np, torch\n"
        "x = torch.from_numpy(np.load(sys.argv[2])).permute(0, 3, 1, 2).contiguous()\n"
        "model = torch.jit.load(sys.argv[1] + '/model.torchscript.pt').eval()\n"
        "with torch.no_grad(): print(' '.join(map(str, model(x).argmax(1).tolist())))\n"
    )
    np.save(tmp_path / "x_test.npy", data.x_test)
    predicted = subprocess.run(
        [sys.executable, "-c", script, folder, str(tmp_path / "x_test.npy")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    accuracy = float(np.mean(np.array(predicted, dtype=int) == data.y_test))
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)


def test_own_fit_with_accumulation_keeps_replicas_identical_and_names_a_straggler(
    tmp_path, store, client
):
    import torch

    result = job(tmp_path, store, "--accumulation-steps", "2", "--fault", "slow")
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2"
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # 192 training samples, 96 a rank, batches of 16, 2 micro-batches a step: 3 steps a rank
    # an epoch; every rank's steps are the same optimizer steps.
    assert history(client, run, "optimizer_steps") == [3.0, 6.0]
    assert history(client, run, "micro_steps") == [6.0, 12.0]
    # Rank 1 sleeps 50 ms a micro-batch: its own work is the longest, rank 0 waits for it.
    assert history(client, run, "slowest_rank") == [1.0, 1.0]
    assert all(ratio > 2 for ratio in history(client, run, "rank_time_ratio"))
    assert result.stdout.count("epoch 2/2") == 1


def test_a_rank_that_raises_fails_the_run_naming_the_rank(tmp_path, store, client):
    result = job(tmp_path, store, "--fault", "raise")
    assert result.returncode != 0
    [run] = all_runs(client)
    assert run.info.status == "FAILED" and run.data.tags["outcome"] == "failed"
    error = run.data.tags["error"]
    assert error.startswith("rank 1 (") and "ValueError: injected fault" in error


def test_a_rank_killed_mid_epoch_ends_the_run_not_running(tmp_path, store, client):
    result = job(tmp_path, store, "--fault", "kill")
    assert result.returncode != 0
    [run] = all_runs(client)
    assert run.info.status in ("FAILED", "KILLED"), run.data.tags
    assert run.data.tags["outcome"] in ("failed", "killed")


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, store, client):
    import torch

    result = job(tmp_path, store, "--fault", "nan", "--fault-step", "4")
    assert result.returncode == 0, result.stderr[-3000:]  # the user's script goes on after fit
    [run] = all_runs(client)
    tags = run.data.tags
    assert run.info.status == "FAILED" and tags["outcome"] == "diverged"
    assert (tags["diverged_epoch"], tags["diverged_step"]) == ("0", "3")  # micro-steps from 0
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # no rank stepped on alone


def test_ctrl_c_to_the_launcher_ends_the_run_killed(tmp_path, store, client):
    launcher = subprocess.Popen(
        torchrun(
            *("--standalone", "--nproc-per-node", "2", JOB, "--tracking-uri", store),
            *("--out", str(tmp_path), "--epochs", "500", "--fault", "slow"),
        ),
        cwd=tmp_path,
        env=env_for(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: bool(all_runs(client)), 120, "the job's run")
        time.sleep(1)
        os.kill(launcher.pid, signal.SIGINT)
        assert launcher.wait(60) != 0
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    [run] = all_runs(client)
    assert run.info.status == "KILLED" and run.data.tags["outcome"] == "killed"


def test_two_launchers_on_loopback_are_one_two_node_job(tmp_path, store, client):
    port = free_port()
    nodes = [
        subprocess.Popen(
            torchrun(
                *("--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank)),
                *("--rdzv-endpoint", f"127.0.0.1:{port}"),
                *(JOB, "--tracking-uri", store, "--out", str(tmp_path)),
            ),
            cwd=tmp_path,
            env=env_for(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:]
    [run] = all_runs(client)
    params, tags = run.data.params, run.data.tags
    assert run.info.status == "FINISHED"
    assert (params["world_size"], params["nodes"], params["processes_per_node"]) == ("2", "2", "1")
    assert {"distributed.node0", "distributed.node1"} <= set(tags)
    assert "epoch 2/2" in outputs[0][0] and "epoch" not in outputs[1][0]


def test_the_docs_hugging_face_example_under_torchrun_is_one_run(tmp_path, store, client):
    (tmp_path / "hf_trainer.py").write_text(docs_examples()["hf_trainer.py"])
    # accelerate shards a Trainer's data over CPU processes only when told it runs on the CPU.
    env = {"MLFLOW_TRACKING_URI": store, "ACCELERATE_USE_CPU": "1"}
    result = launch(tmp_path, "hf_trainer.py", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    # 256 samples, 32 a device, 2 devices: 4 optimizer steps an epoch.
    assert history(client, run, "optimizer_steps") == [4.0, 8.0]
    assert len(history(client, run, "samples_per_s")) == 2
    assert result.stdout.count("epoch 2/2") == 1


def test_a_sweep_of_distributed_trials_makes_one_run_a_trial_under_one_parent(
    tmp_path, store, client
):
    mltrack = str(Path(sys.executable).with_name("mltrack"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    common = ["--trials", "2", "--sampler", "random", "--pruner", "none", "--storage", storage]
    space = ["--space-precision", "fp32", "--space-batch-size", "8,16"]
    experiment = [
        *("--model", "resnet50_torchvision", "--dataset", "synthetic", "--synthetic-size", "32"),
        *("--epochs", "2", "--no-export", "--num-workers", "0", "--tracking-uri", store),
    ]
    result = subprocess.run(
        [mltrack, "sweep", "experiments.cifar_torch", "--nproc-per-node", "2", *common, *space,
         *experiment],
        cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = all_runs(client)
    [parent] = [r for r in runs if r.data.tags.get("mltrack.role") == "study"]
    trials = [r for r in runs if "optuna.trial" in r.data.tags]
    assert sorted(r.data.tags["optuna.trial"] for r in trials) == ["0", "1"]
    for run in trials:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["world_size"] == "2"
        assert len(history(client, run, "val_accuracy")) == 2  # reported epoch by epoch
    assert result.stdout.count("epoch 2/2") == 2  # rank 0's lines only

    keras = subprocess.run(
        [mltrack, "sweep", "experiments.cifar_amp", "--nproc-per-node", "2", *common],
        cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert keras.returncode == 2 and "--nproc-per-node: got 2, expected 1" in keras.stderr


def test_the_hugging_face_example_under_accelerate_launch_is_one_run(tmp_path, store, client):
    # accelerate's --cpu launches one process; its multi-GPU launcher (torchrun inside) shards
    # a Trainer on CPU processes when the script asks for the CPU, as a CPU user's would.
    example = docs_examples()["hf_trainer.py"]
    cpu = example.replace('report_to="none",', 'report_to="none",\n    use_cpu=True,')
    assert cpu != example
    (tmp_path / "hf_trainer.py").write_text(cpu)
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    result = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "hf_trainer.py"],
        cwd=tmp_path, env={**env_for(tmp_path), "MLFLOW_TRACKING_URI": store},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["world_size"], params["distributed.launcher"]) == ("2", "accelerate")
    assert history(client, run, "optimizer_steps") == [4.0, 8.0]
