"""Seed 004 offline: the seed's recipes per model and arm, the CIFAR ResNet50 it defines,
EfficientNet-B0 on (local) ImageNet weights, and the ViT through transformers.Trainer."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from mltrack.measure.environment import detect_hardware
from mltrack.studies import recipes
from tests.conftest import (
    all_runs,
    check_efficiency,
    env_for,
    reload_without_mltrack,
    verified_children,
)

pytestmark = pytest.mark.torch

MODULE = "experiments.cifar_torch"
TINY = ["--dataset", "synthetic", "--synthetic-size", "16", "--batch-size", "8", "--epochs", "1"]
TINY_VIT = [
    "--model",
    "vit",
    "--pretrained",
    "none",
    "--vit-size",
    "tiny",
    "--dataset",
    "synthetic",
]
TIMING = ("train_wall_s", "val_wall_s", "epoch_wall_s", "samples_per_s", "epoch_user_cpu_s")
GPU = bool(detect_hardware().gpus)


def history(client, run, key: str) -> list[float]:
    points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
    return [m.value for m in points]


def test_defaults_are_the_seeds_code_per_model_and_arm():
    from experiments.cifar_torch import EXPERIMENT

    def parsed(*argv: str) -> dict:
        return dataclasses.asdict(EXPERIMENT.parse(["--dataset", "cifar10", *argv]))

    resnet = parsed()
    assert {k: resnet[k] for k in ("model", "precision", "batch_size", "test_batch_size")} == {
        "model": "resnet50", "precision": "fp32", "batch_size": 128, "test_batch_size": 256,
    }  # fmt: skip
    assert (resnet["epochs"], resnet["learning_rate"], resnet["weight_decay"]) == (30, 1e-3, 1e-3)
    assert (resnet["clip_grad_value"], resnet["augment"], resnet["num_workers"]) == (0.01, True, 2)
    assert (resnet["pretrained"], resnet["pin_memory"], resnet["schedule"]) == (
        "none",
        True,
        "seed",
    )
    assert resnet["pin_memory_in_effect"] == GPU  # nothing to pin memory for without a GPU
    logged = EXPERIMENT.parse(["--dataset", "cifar10"]).logged()  # what ran; the request apart
    assert (logged["pin_memory"], logged["pin_memory_requested"]) == (GPU, True)
    assert (logged["device"], logged["device_requested"]) == ("cuda" if GPU else "cpu", "auto")
    tuned = parsed("--tuned")  # the perf files: fp16 autocast, no scaler, 2 steps of loss / 2
    assert (tuned["precision"], tuned["accumulation_steps"], tuned["loss_scaling"]) == (
        "mixed_fp16", 2, False,
    )  # fmt: skip
    assert (tuned["accumulation_loss"], tuned["clip_grad_value"]) == ("divide", 0.0)
    b0, b0_tuned = (
        parsed("--model", "efficientnet_b0"),
        parsed("--model", "efficientnet_b0", "--tuned"),
    )
    assert (b0["batch_size"], b0["epochs"], b0["learning_rate"], b0["pretrained"]) == (
        96, 20, 1e-2, "imagenet",
    )  # fmt: skip
    assert (b0_tuned["batch_size"], b0_tuned["precision"], b0_tuned["loss_scaling"]) == (
        200, "mixed_fp16", True,
    )  # fmt: skip
    vit = parsed("--model", "vit", "--no-augment")
    assert (vit["batch_size"], vit["test_batch_size"], vit["epochs"]) == (70, 30, 10)
    assert vit["pretrained"] == "google/vit-base-patch16-224-in21k"
    assert parsed("--model", "vit", "--dataset", "cifar100")["epochs"] == 15
    vit_tuned = parsed("--model", "vit", "--tuned", "--precision", "mixed_bf16")
    assert vit_tuned["accumulation_steps"] == 16
    # Explicit flags win; a sweep's per-trial replace keeps what was resolved once.
    assert parsed("--tuned", "--accumulation-steps", "4", "--batch-size", "64")["batch_size"] == 64
    cfg = EXPERIMENT.parse(["--tuned"])
    assert dataclasses.replace(cfg, accumulation_steps=1).precision == "mixed_fp16"


def test_resnet50_is_the_seeds_cifar_network_and_exports_it(run_module, client, tmp_path):
    """Must show: the exported network's first convolution is 3×3, stride 1, on 3 channels."""
    result = run_module(MODULE, *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr[-3000:]  # no framework warning, export included
    assert "epoch 1/1" in result.stdout and "pin_memory" not in result.stderr  # torch's warning
    assert GPU or "pin_memory: asked, not in effect" in result.stdout  # one note instead
    [run] = all_runs(client)
    params, tags = run.data.params, run.data.tags
    assert run.info.status == "FINISHED" and tags["reload_ok"] == "true"
    assert (params["model"], params["precision"], params["clip_grad_value"]) == (
        "resnet50", "fp32", "0.01",
    )  # fmt: skip
    assert params["pin_memory_requested"] == "True" and params["pin_memory"] == str(GPU)
    assert "pin_memory_in_effect" not in params
    assert params["seed.deviations"].startswith("all models: images stay uint8")
    for key in (*TIMING, "learning_rate", "val_f1_micro_batch_mean", "val_top5_accuracy"):
        assert len(history(client, run, key)) == 1, key
    assert run.data.metrics["test_accuracy"] == run.data.metrics["val_accuracy"]
    check_efficiency(client, run)
    reload_without_mltrack(client, run.info.run_id, "torch", tmp_path)  # batches of 3 and 5
    folder = tmp_path / "exported" / "model"  # downloaded by reload_without_mltrack
    script = (
        "import sys, torch\n"
        "program = torch.export.load(sys.argv[1] + '/model.pt2')\n"
        "conv = next(n for n in program.graph.nodes if 'conv' in str(n.target))\n"
        "print(tuple(conv.args[1].meta['val'].shape[1:]), list(conv.args[3]))\n"
    )
    first = subprocess.run([sys.executable, "-c", script, folder], capture_output=True, text=True)
    assert first.stdout.strip() == "(3, 3, 3) [1, 1]", first.stderr[-2000:]


def test_the_resnet50_tuned_arm_runs_fp16_autocast_without_a_scaler(run_module, client):
    """The perf files' arm, on torchvision's network (same recipe, 16x fewer FLOPs a test)."""
    args = ["--dataset", "synthetic", "--synthetic-size", "8", "--batch-size", "4", "--epochs", "1"]
    result = run_module(MODULE, *args, "--model", "resnet50_torchvision", "--tuned", "--no-export")
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    params, metrics = run.data.params, run.data.metrics
    assert run.data.tags["torch.precision_run"] == "mixed_fp16" == params["precision"]
    assert (params["accumulation_steps"], params["effective_batch_size"]) == ("2", "8")
    assert (params["loss_scaling"], params["clip_grad_value"]) == ("False", "0.0")
    assert "loss_scale" not in metrics  # the seed's perf files have no GradScaler
    assert (metrics["micro_steps"], metrics["optimizer_steps"]) == (2, 1)


def save_random_b0(path) -> None:
    import torch
    import torchvision

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.efficientnet_b0().state_dict(), path)


def test_efficientnet_b0_on_imagenet_weights_from_the_hub_cache(run_module, client, tmp_path):
    """torchvision's ImageNet loading code on a local file (the hub cache of HOME=tmp_path)."""
    import torchvision

    url = torchvision.models.EfficientNet_B0_Weights.DEFAULT.url
    save_random_b0(tmp_path / ".cache" / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])
    args = ["--dataset", "synthetic", "--synthetic-size", "8", "--batch-size", "4", "--epochs", "1"]
    result = run_module(MODULE, "--model", "efficientnet_b0", *args, "--no-export")
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    params = run.data.params
    assert (params["pretrained"], params["test_batch_size"], params["learning_rate"]) == (
        "imagenet", "4", "0.01",
    )  # fmt: skip
    assert history(client, run, "learning_rate") == [pytest.approx(1e-3)]  # stem+blocks group
    for key in ("val_precision_macro", "val_recall_macro", "val_f1_macro", "val_top5_accuracy"):
        assert key in run.data.metrics, key


@pytest.mark.parametrize(
    ("model", "env", "message"),
    [
        (
            "efficientnet_b0",
            {"https_proxy": "http://127.0.0.1:9"},
            "ImageNet weights for efficientnet_b0",
        ),
        (
            "vit",
            {"HF_HUB_OFFLINE": "1"},
            "google/vit-base-patch16-224-in21k from the Hugging Face hub",
        ),
    ],
)
def test_unreachable_weights_fail_before_any_run_naming_the_flag(tmp_path, model, env, message):
    result = subprocess.run(
        [sys.executable, "-m", MODULE, "--model", model, "--dataset", "synthetic"],
        cwd=tmp_path, env={**env_for(tmp_path), **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert message in lines[0] and "pass --pretrained none" in lines[0]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_vit_runs_through_transformers_trainer_with_the_callback(run_module, client, tmp_path):
    """Must show: the ViT's run has the per-epoch timing metrics of the other PyTorch runs."""
    result = run_module(
        MODULE, *TINY_VIT, "--synthetic-size", "40", "--batch-size", "8", "--epochs", "2"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr[-3000:]  # no framework warning, export included
    [run] = all_runs(client)
    params, tags = run.data.params, run.data.tags
    assert run.info.status == "FINISHED" and tags["reload_ok"] == "true"
    assert tags["mltrack.trainer"] == "transformers" and tags["torch.precision_run"] == "fp32"
    assert (params["hf.save_strategy"], params["hf.report_to"], params["hf.eval_strategy"]) == (
        "no", "[]", "epoch",
    )  # fmt: skip
    assert (params["vit.train_size"], params["vit.eval_size"]) == ("36", "4")  # 10% held out
    histories = {
        k: history(client, run, k) for k in (*TIMING, "loss", "val_loss", "val_accuracy", "mfu")
    }
    assert all(len(values) == 2 for values in histories.values()), histories
    for train_s, val_s, epoch_s, rate in zip(*(histories[k] for k in TIMING[:4]), strict=True):
        assert train_s > 0 and val_s > 0 and train_s + val_s <= epoch_s * (1 + 1e-9)
        assert rate == pytest.approx(36 / train_s, rel=1e-6)
    for key in ("total_wall_s", "steady_samples_per_s", "test_accuracy", "test_f1_macro"):
        assert key in run.data.metrics, key
    assert not [p for p in tmp_path.rglob("checkpoint-*")]  # the Trainer saved nothing
    check_efficiency(client, run, "torch")  # issue 31: the Trainer's MFU too


def test_vit_from_a_local_save_pretrained_dir_in_bf16(run_module, client, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    local = tmp_path / "tiny-vit"
    ViTForImageClassification(
        ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1,
                  num_attention_heads=2, intermediate_size=64, num_labels=3)
    ).save_pretrained(local)  # fmt: skip
    args = ["--model", "vit", "--pretrained", str(local), "--dataset", "synthetic", "--epochs", "1"]
    args += ["--synthetic-size", "16", "--batch-size", "8", "--tuned", "--no-export"]
    result = run_module(MODULE, *args, "--precision", "mixed_bf16", "--accumulation-steps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    assert run.data.params["pretrained"] == str(local) and run.data.params["hf.bf16"] == "True"
    # 32×32 CIFAR images resized to the checkpoint's 16×16 inside the model; 3 → 10 labels.
    assert run.data.tags["torch.precision_run"] == "mixed_bf16"  # what autocast ran
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "vgg16"],
            "--model: got 'vgg16', expected one of resnet50, resnet50_torchvision",
        ),
        (["--num-workers", "-2"], "--num-workers: got -2, expected a number >= 0"),
        (
            ["--pretrained", "imagenet"],
            "--pretrained: got 'imagenet', expected none or a state_dict",
        ),
        ([*TINY_VIT, "--augment"], "--augment: got True, expected --no-augment for vit"),
        (["--dataset", "cifar100", "--data-dir", "."], "--data-dir: cifar100 not found in ."),
    ]
    + (
        []
        if GPU
        else [([*TINY_VIT, "--tuned"], "expected fp32 or mixed_bf16 for vit without a GPU")]
    ),
)
def test_bad_input_exits_2_without_a_run(run_module, tmp_path, args, message):
    result = run_module(MODULE, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_bf16_and_mixed_fp16_run_as_labelled_and_reload(run_module, client):
    args = ["--dataset", "synthetic", "--synthetic-size", "8", "--batch-size", "4", "--epochs", "1"]
    args += ["--model", "resnet50_torchvision", "--precisions", "bf16,mixed_fp16"]
    result = run_module(MODULE, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    ran = verified_children(client, {"bf16", "mixed_fp16"})
    assert all(r.data.tags["torch.precision_run"] == p for p, r in ran.items())
    for run in ran.values():  # MFU <= 1 against the peak of what each dtype runs on
        check_efficiency(client, run, "torch")
    assert "loss_scale" in ran["mixed_fp16"].data.metrics  # untuned arm: a GradScaler


def test_the_deviations_are_written_down():
    import experiments.cifar_torch as module

    assert module.EXPERIMENT.deviations == recipes.DEVIATIONS
    assert "Deviations" in (module.__doc__ or "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "1"], "--batch-size: got 1, expected 2 or more: resnet50 has BatchNorm"),
        (["--device", "gpu0"], "--device: got 'gpu0', expected auto, cpu, cuda or cuda:N"),
        (["--device", "cuda:7"], "--device: got 'cuda:7', expected auto, cpu or a device this"),
    ]
    + ([] if GPU else [(["--device", "cuda"], "--device: got 'cuda', expected auto, cpu or")]),
)
def test_what_the_model_or_machine_cannot_take_is_refused_at_parse_time(
    run_module, tmp_path, args, message
):
    result = run_module(MODULE, *TINY, "--precision", "fp32", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert message in line
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_a_last_training_batch_of_one_is_dropped_under_batchnorm(run_module, client):
    """9 images at batch 8: the last batch of 1 crashed BatchNorm after the epoch's work."""
    args = ["--dataset", "synthetic", "--synthetic-size", "9", "--batch-size", "8", "--epochs"]
    result = run_module(MODULE, *args, "1", "--precision", "fp32", "--no-export")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "dropping each epoch's last training batch of 1 sample" in result.stdout
    [run] = all_runs(client)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.dropped_last_batch_samples"] == "1"
    assert run.data.metrics["optimizer_steps"] == 1  # the batch of 8 trained, the 1 did not


def test_compile_flags_reach_the_model_and_a_bad_mode_is_one_line(run_module):
    """Issue 29 (the loop's compiled path runs in tests/test_torch.py: a ResNet50's compile
    takes about a minute here)."""
    import torch

    from experiments.cifar_torch import EXPERIMENT
    from mltrack import torch as mt

    argv = ["--dataset", "synthetic", "--model", "resnet50_torchvision", "--compile"]
    cfg = EXPERIMENT.parse([*argv, "--compile-mode", "max-autotune"])
    settings = recipes.settings(cfg)
    assert (settings.compile, settings.compile_mode) == (True, "max-autotune")
    assert cfg.logged()["compile"] is True
    assert hasattr(mt.prepare(torch.nn.Linear(2, 2), settings, "fp32"), "_orig_mod")
    bad = run_module(MODULE, *argv, "--compile-mode", "fast")
    assert bad.returncode == 2
    assert "--compile-mode: got 'fast', expected one of default, reduce-overhead" in bad.stderr


def test_a_run_killed_at_epoch_2_resumes_as_one_run_of_four_epochs(run_module, client, tmp_path):
    """Issue 29: a run SIGKILLed mid-training goes on with --resume RUN_ID from its checkpoint:
    one run, epochs 0..3, FINISHED; a param that would change is refused in one line."""
    import os
    import signal

    from tests.conftest import env_for, wait_until

    args = ["--model", "resnet50_torchvision", "--dataset", "synthetic", "--synthetic-size", "64",
            "--batch-size", "16", "--epochs", "4", "--precision", "fp32", "--no-export",
            "--num-workers", "0", "--checkpoint"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", MODULE, *args], cwd=tmp_path, env=env_for(tmp_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        runs = lambda: all_runs(client)  # noqa: E731
        logged = lambda: runs() and len(history(client, runs()[0], "epoch_wall_s")) >= 2  # noqa: E731
        wait_until(lambda: bool(logged()), 600, "two epochs logged")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(60)
    [run] = all_runs(client)
    run_id = run.info.run_id
    # Its writer outlives it and ends the run KILLED within seconds (issue 28); resumable.
    wait_until(lambda: client.get_run(run_id).info.status == "KILLED", 60, "the run KILLED")
    assert "ended without ending its run" in client.get_run(run_id).data.tags["error"]
    changed = run_module(MODULE, *args, "--resume", run_id, "--learning-rate", "0.5")
    assert changed.returncode == 2, changed.stderr[-2000:]
    assert f"--resume {run_id}: param learning_rate was '0.001', got '0.5'" in changed.stderr
    result = run_module(MODULE, *args, "--resume", run_id)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    assert run.info.status == "FINISHED" and run.data.tags["mltrack.resumed"] == "1"
    steps = sorted(m.step for m in client.get_metric_history(run_id, "epoch_wall_s"))
    assert steps[-4:] == [0, 1, 2, 3] and sorted(set(steps)) == [0, 1, 2, 3]
    # The optimizer went on from the checkpoint: 4 steps an epoch, counted on, not from 0.
    assert history(client, run, "optimizer_steps")[-1] == 16.0
    from mltrack.tracking.resume import checkpoint_dir

    assert not checkpoint_dir(run_id).exists()  # a finished run's checkpoint is gone
