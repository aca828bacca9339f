"""Modules mltrack puts around a model so it trains and exports on raw inputs, and the module a
user wrote found inside the wrappers PyTorch puts around it."""

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


def eager(model: nn.Module) -> nn.Module:
    """The module as written, inside ``DistributedDataParallel`` (``.module``) and
    ``torch.compile``'s ``OptimizedModule`` (``._orig_mod``): what FLOPs are counted on and what
    is exported. Tracing a compiled module fails (pytorch/pytorch#117758) and its state dict's
    keys carry an ``_orig_mod.`` prefix (karpathy/nanoGPT#325)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and hasattr(model, "no_sync") and hasattr(model, "module"):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def is_compiled(model: nn.Module) -> bool:
    """Whether ``torch.compile`` wraps ``model`` (or the module inside its DDP wrapper)."""
    return any(
        isinstance(getattr(m, "_orig_mod", None), nn.Module)
        for m in (model, getattr(model, "module", None))
        if m is not None
    )
