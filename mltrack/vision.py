"""The seed-004 models and loaders (``experiments.cifar_torch``): torchvision's ResNet50 and
EfficientNet-B0 and a Hugging Face ViT, each behind ``mltrack.torch.ImageInput``."""

from __future__ import annotations

from typing import Any

from mltrack.data import ArrayDataset

MODELS = ("resnet50", "efficientnet_b0", "vit")
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # CIFAR-10 channel statistics


def image_classifier(model: str, pretrained: str, num_classes: int) -> Any:
    """A seed-004 backbone behind a preprocessing layer (uint8 NCHW in, logits out).

    ``pretrained``: torchvision's "imagenet" weights or a state_dict file; for the ViT a hub id
    or a ``save_pretrained`` folder; empty: random weights (the ViT small enough for a CPU).
    """
    import torch
    import torchvision
    from torch import nn

    from mltrack import torch as mt

    size = 32
    if model == "vit":
        from transformers import ViTConfig, ViTForImageClassification

        if pretrained:
            vit = ViTForImageClassification.from_pretrained(
                pretrained, num_labels=num_classes, ignore_mismatched_sizes=True
            )
        else:  # small enough to train on a CPU, built offline from a config
            vit = ViTForImageClassification(
                ViTConfig(
                    image_size=32,
                    patch_size=4,
                    num_channels=3,
                    hidden_size=192,
                    num_hidden_layers=6,
                    num_attention_heads=3,
                    intermediate_size=384,
                    num_labels=num_classes,
                )
            )
        size = int(vit.config.image_size)
        backbone: nn.Module = mt.Logits(vit)
    else:
        make = getattr(torchvision.models, model)
        backbone = make(weights="DEFAULT" if pretrained == "imagenet" else None)
        if pretrained and pretrained != "imagenet":
            backbone.load_state_dict(torch.load(pretrained, map_location="cpu"))
        head = backbone.fc if model == "resnet50" else backbone.classifier[-1]
        replacement = nn.Linear(head.in_features, num_classes)
        if model == "resnet50":
            backbone.fc = replacement
        else:
            backbone.classifier[-1] = replacement
    return nn.Sequential(mt.ImageInput(MEAN, STD, 32, size), backbone)


def array_loaders(
    data: ArrayDataset, batch_size: int, pin_memory: bool, num_workers: int, seed: int
) -> tuple[Any, Any]:
    """Training (shuffled, seeded) and test loaders over NHWC uint8 arrays, as NCHW tensors."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    def tensors(x: Any, y: Any) -> TensorDataset:
        return TensorDataset(
            torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)
        )

    common = {
        "batch_size": batch_size,
        "pin_memory": pin_memory,
        "num_workers": num_workers,
    }
    generator = torch.Generator().manual_seed(seed)
    return (
        DataLoader(
            tensors(data.x_train, data.y_train), shuffle=True, generator=generator, **common
        ),
        DataLoader(tensors(data.x_test, data.y_test), shuffle=False, **common),
    )
