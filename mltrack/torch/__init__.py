"""mltrack for PyTorch: a tracked training loop for any ``nn.Module``, and export.

Your own model, optimizer and loaders through mltrack's loop (precision, gradient accumulation,
honest timing, divergence; ``mltrack/torch/loop.py``):

    import mltrack
    from mltrack import torch as mt

    settings = mt.Settings(precision="mixed_bf16", accumulation_steps=2)
    with mltrack.start_run("my-experiment") as run:
        model = mt.prepare(model, settings, settings.precision)
        model, summary = mt.fit(run, model, optimizer, train_loader, val_loader,
                                epochs=5, settings=settings)
        mt.export(run, model, probe_batch, precision=settings.precision)  # optional

Your own loop instead: ``mltrack.Epochs`` (the ledger around your epochs), with
``flops_per_sample`` for MFU.
"""

from mltrack.export.artifacts import export_torch as export
from mltrack.measure.efficiency import torch_flops_per_sample as flops_per_sample
from mltrack.torch.loop import Settings, evaluate, fit, prepare
from mltrack.torch.modules import ImageInput, Logits

__all__ = [
    "ImageInput",
    "Logits",
    "Settings",
    "evaluate",
    "export",
    "fit",
    "flops_per_sample",
    "prepare",
]
