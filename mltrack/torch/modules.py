"""Modules mltrack puts around a model so it trains and exports on raw inputs."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class ImageInput(nn.Module):
    """uint8 NCHW images to normalised floats in the model's dtype, resized if needed.

    Part of the model, so exported models take raw images and loaders move uint8 (4× less
    than float32 across the bus).
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        input_size: int,
        model_size: int,
        mode: str = "bilinear",
    ) -> None:
        super().__init__()
        # Decided here, not from x.shape in forward(), so tracing sees no data-dependent branch.
        self.resize_to = model_size if model_size != input_size else 0
        self.mode = mode  # torch's interpolate modes: bilinear, bicubic, ...
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.to(self.mean.dtype) / 255 - self.mean) / self.std
        if self.resize_to:
            size = (self.resize_to, self.resize_to)
            x = functional.interpolate(x, size=size, mode=self.mode, align_corners=False)
        return x


class Logits(nn.Module):
    """transformers models return an output object; traced and exported models need a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits
