"""An epoch's batches as the loop weighs them: accumulation windows, sizes, BatchNorm's limit."""

from __future__ import annotations

from typing import Any

from torch import nn


def window_weights(batch_sizes: list[int], accumulation_steps: int) -> list[float]:
    """Each micro-batch's weight: its samples / the samples in its accumulation window.

    With a mean-reduced loss, summing ``weight * loss`` over a window gives exactly the mean
    loss over all the window's samples, the same as one batch of them.
    """
    weights = []
    for start in range(0, len(batch_sizes), accumulation_steps):
        window = batch_sizes[start : start + accumulation_steps]
        weights += [n / sum(window) for n in window]
    return weights


def loader_batch_sizes(loader: Any) -> list[int]:
    """The sizes of an epoch's batches (this rank's, on a ``DistributedSampler``)."""
    n, b = len(loader.sampler), loader.batch_size
    full, rest = divmod(n, b)
    return [b] * full + ([] if loader.drop_last or rest == 0 else [rest])


def batch_norm_drop(model: nn.Module, sizes: list[int]) -> int:
    """How many samples to drop from the end of each training epoch: a last micro-batch of one
    sample when ``model`` has BatchNorm layers, which cannot normalise over one sample in
    training mode ("Expected more than 1 value per channel"); dropped as ``drop_last`` would.

    ``ValueError`` if every training batch is of one sample (``batch_size`` 1).
    """
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if not batch_norm or not sizes or sizes[-1] != 1:
        return 0
    if len(sizes) == 1 or sizes[0] == 1:
        raise ValueError(
            "batch_size: got 1, expected 2 or more for a model with BatchNorm layers (it "
            "cannot normalise a batch of one sample in training mode)"
        )
    return 1
