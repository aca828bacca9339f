"""The PyTorch models and data the loop benchmarks train (``torch_loop``, ``ddp_scaling``): one
definition, imported by their side scripts (which run with the project on ``PYTHONPATH``)."""

from __future__ import annotations

from typing import Any


def model(name: str) -> Any:
    """``seed003_mlp`` (the seed-003 network, cifar_amp's default, in PyTorch) or a model of
    ``mltrack.studies.vision.image_classifier`` (``resnet50_torchvision``, ...), fresh weights."""
    from torch import nn

    from mltrack.studies import vision
    from mltrack.torch import ImageInput

    if name == "seed003_mlp":
        return nn.Sequential(
            ImageInput(*vision.STATS["cifar10"], 32, 32), nn.Flatten(),
            nn.Linear(3072, 3000), nn.ReLU(), nn.Linear(3000, 1000), nn.ReLU(),
            nn.Linear(1000, 10),
        )  # fmt: skip
    return vision.image_classifier(name, "none", 10)


def loaders(images: int, batch_size: int) -> tuple[Any, Any]:
    """Synthetic 32×32 images (seed 0): a shuffled training loader of ``images`` and a
    validation loader of its first 32."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from mltrack.studies.data import synthetic

    data = synthetic.images((32, 32, 3), 10, images, 32, 0)
    x = torch.from_numpy(data.x_train).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(data.y_train)
    generator = torch.Generator().manual_seed(0)
    train = DataLoader(
        TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=generator
    )
    return train, DataLoader(TensorDataset(x[:32], y[:32]), batch_size=32)
