"""Seed 004 offline: tuned and untuned ResNet50, ViT from a config and from save_pretrained."""

from __future__ import annotations

import pytest

from mltrack.environment import detect_hardware
from mltrack.precision import resolve
from tests.conftest import (
    all_runs,
    check_efficiency,
    reload_without_mltrack,
    verified_children,
)

pytestmark = pytest.mark.torch

SMALL = ["--dataset", "synthetic", "--synthetic-size", "64", "--batch-size", "16", "--epochs", "1"]


@pytest.mark.parametrize("tuned", [False, True])
def test_resnet50_tuned_and_untuned(run_module, client, tuned, tmp_path):
    args = [*SMALL, "--model", "resnet50"] + (["--tuned"] if tuned else ["--precision", "fp32"])
    result = run_module("experiments.cifar_torch", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    assert run.info.status == "FINISHED"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    if tuned:  # AMP = what --precision auto resolves to here, labelled as what ran
        fast = resolve("auto", detect_hardware())
        assert params["precision_requested"] == "auto"
        assert params["precision"] == fast.resolved == tags["torch.precision_run"]
        assert params["precision_reason"] == fast.reason
        assert params["accumulation_steps"] == "4"
        assert params["pin_memory"] == "True" and params["effective_batch_size"] == "64"
    else:
        assert params["precision"] == "fp32" and params["effective_batch_size"] == "16"
    for key in ("test_f1_macro", "test_accuracy", "total_wall_s", "total_cpu_s"):
        assert key in metrics, key
    for key in ("val_f1_macro", "data_wait_s", "compute_s", "optimizer_steps", "epoch_wall_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 1, key
    assert tags["reload_ok"] == "true" and tags["reload_formats"] == "export,pyfunc,torchscript"
    check_efficiency(client, run)
    if not tuned:  # the exported programs take any batch size, loaded by torch alone
        reload_without_mltrack(client, run.info.run_id, "torch", tmp_path)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model.torchscript.pt", "model/model.pt2"} <= artifacts
    assert "epoch 1/1" in result.stdout  # progress is visible


def test_vit_from_a_small_config_trains_and_exports_offline(run_module, client):
    result = run_module("experiments.cifar_torch", *SMALL, "--model", "vit")
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    assert run.info.status == "FINISHED" and run.data.tags["reload_ok"] == "true"


def test_vit_pretrained_from_a_local_save_pretrained_dir(run_module, client, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    local = tmp_path / "tiny-vit"
    ViTForImageClassification(
        ViTConfig(
            image_size=16,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=3,
        )
    ).save_pretrained(local)
    result = run_module(
        "experiments.cifar_torch", *SMALL, "--model", "vit", "--pretrained", str(local)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    assert run.data.params["pretrained"] == str(local)
    # 32×32 CIFAR images resized to the checkpoint's 16×16 inside the model; 3 → 10 labels.
    assert run.info.status == "FINISHED" and run.data.tags["reload_ok"] == "true"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "vgg16"],
            "--model: got 'vgg16', expected one of resnet50, efficientnet_b0, vit",
        ),
        (["--num-workers", "-1"], "--num-workers: got -1, expected an integer >= 0"),
        (["--dataset", "cifar100", "--data-dir", "."], "--data-dir: cifar100 not found in ."),
    ],
)
def test_bad_input_exits_2_without_a_run(run_module, tmp_path, args, message):
    result = run_module("experiments.cifar_torch", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_bf16_and_mixed_fp16_run_as_labelled_and_reload(run_module, client):
    result = run_module("experiments.cifar_torch", *SMALL, "--precisions", "bf16,mixed_fp16")
    assert result.returncode == 0, result.stderr[-3000:]
    ran = verified_children(client, {"bf16", "mixed_fp16"})
    assert all(r.data.tags["torch.precision_run"] == p for p, r in ran.items())
    assert "loss_scale" in ran["mixed_fp16"].data.metrics
