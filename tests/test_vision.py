"""Seed 004's networks, weights and recipes (mltrack.studies.vision, cifar_resnet, recipes), no
training."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mltrack.errors import UsageError
from mltrack.studies import recipes, vision
from mltrack.studies.cifar_resnet import CifarResNet50

pytestmark = pytest.mark.torch


def test_the_cifar_resnet50_keeps_32x32_through_its_stem():
    """3×3 stride-1 stem, no max-pool: the last stage sees 4×4, pooled by AvgPool2d(4)."""
    net = CifarResNet50(10)
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert (first.in_channels, first.kernel_size, first.stride) == (3, (3, 3), (1, 1))
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert [len(stage) for stage in net.stages] == [3, 4, 6, 3]
    seen: dict[str, torch.Size] = {}
    net.pool.register_forward_hook(lambda m, inputs, out: seen.update(shape=inputs[0].shape))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert tuple(seen["shape"]) == (2, 2048, 4, 4)


@pytest.mark.parametrize(("classes", "trainable"), [(10, 85_806_346), (100, 85_875_556)])
def test_vit_base_from_scratch_has_the_seeds_trainable_parameters(classes, trainable):
    """The seed's screenshots: 85,806,346 (CIFAR-10) and 85,875,556 (CIFAR-100) trainable
    parameters, ViT-Base/16 at 224 with a new head and no pooler."""
    net = vision.image_classifier("vit", "none", classes, vit_size="base")
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == trainable
    assert net[0].resize_to == 224  # 32×32 pixels resized inside the model


def test_efficientnet_b0_loads_a_state_dict_file_then_takes_a_new_head(tmp_path):
    import torchvision

    source = torchvision.models.efficientnet_b0()
    path = tmp_path / "b0.pt"
    torch.save(source.state_dict(), path)
    net = vision.image_classifier("efficientnet_b0", str(path), 10)
    stem = net[1].features[0][0].weight
    torch.testing.assert_close(stem, source.features[0][0].weight)
    assert net[1].classifier[-1].out_features == 10
    bn = net[1].features[0][1]
    assert (bn.eps, bn.momentum) == (1e-3, 0.01)  # the seed's own B0
    assert (net[0].resize_to, net[0].mode) == (224, "bicubic")


def test_imagenet_weights_come_from_torchs_hub_cache(tmp_path, monkeypatch):
    """The real loading path: torchvision's weights enum reads the file from the hub cache."""
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = torchvision.models.EfficientNet_B0_Weights.DEFAULT
    cached = tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    cached.parent.mkdir()
    torch.save(torchvision.models.efficientnet_b0().state_dict(), cached)
    vision.ensure_pretrained("efficientnet_b0", "imagenet")  # no download: it is there
    assert (
        vision.image_classifier("efficientnet_b0", "imagenet", 10)[1].classifier[-1].out_features
        == 10
    )


def test_an_unreachable_hub_is_one_line_naming_the_flag(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(UsageError, match=r"^--pretrained: could not load .* --pretrained none"):
        vision.ensure_pretrained("vit", "someone/not-cached-anywhere")


def test_augmentation_keeps_uint8_32x32():
    image = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    for model in ("resnet50", "efficientnet_b0"):
        out = vision.augmentation(model)(image)
        assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    assert vision.augmentation("vit") is None


def test_the_seeds_optimizers_and_schedules():
    cfg = SimpleNamespace(
        model="efficientnet_b0", learning_rate=1e-2, weight_decay=1e-3, schedule="seed", epochs=20
    )
    net = vision.image_classifier("efficientnet_b0", "none", 10)
    sgd, scheduler, every = recipes.optimizer(cfg, net, steps=10)
    assert [g["lr"] for g in sgd.param_groups] == pytest.approx([1e-3, 2e-3, 1e-2])
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert (scheduler.gamma, every) == (0.975, "epoch")
    cfg.model, cfg.learning_rate = "resnet50", 1e-3
    adam, one_cycle, every = recipes.optimizer(cfg, CifarResNet50(), steps=391)
    assert isinstance(one_cycle, torch.optim.lr_scheduler.OneCycleLR) and every == "micro_batch"
    assert one_cycle.total_steps == 20 * 391 and adam.defaults["weight_decay"] == 1e-3
    cfg.schedule = "constant"
    assert recipes.optimizer(cfg, CifarResNet50(), steps=391)[1] is None
