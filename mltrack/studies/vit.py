"""Seed 004's ViT, fine-tuned through Hugging Face's ``transformers.Trainer`` as the seed did.

The seed's ViT notebooks (SahilNokhwal/annt, ``ViT/``) trained ViT-Base/16 with a new head
through the Trainer and its default AdamW: 45,000 training images with 5,000 held out for the
per-epoch evaluation, batch 70, evaluation batch 30, its ``fp16`` and accumulation arguments in
the tuned arm. Here the same Trainer trains, with mltrack attached as a ``TrainerCallback``
(``mltrack.huggingface.MltrackCallback``) for the per-epoch ledger, and:

- ``report_to="none"`` (no other tracker), ``save_strategy="no"`` (no checkpoints) and the
  Trainer's output folder in a temporary directory removed after;
- ``eval_strategy`` and ``logging_strategy`` ``"epoch"``: the callback's epoch boundaries, and
  ``logging_nan_inf_filter=False`` so that a NaN step loss is not averaged away (logging only);
- the model the Trainer calls is the exported classifier itself (``ImageInput`` then the ViT)
  with the cross-entropy the ViT computes for single-label classification, so no separate
  preprocessing: the Trainer's batches are the 32×32 uint8 images;
- the final ``test_*`` metrics from ``trainer.evaluate`` on the test split;
- progress bars on a terminal only, and one line per epoch (the callback's) in logs.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

import numpy as np

from mltrack.studies.data import ArrayDataset
from mltrack.tracking.run import Run

HOLDOUT = 0.1  # 5,000 of CIFAR's 50,000 training images
SKIPPED = ("runtime", "samples_per_second", "steps_per_second", "epoch")


def holdout_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and held-out evaluation images: a seeded random 10%."""
    order = np.random.default_rng(seed).permutation(n)
    held = max(round(n * HOLDOUT), 1)
    return np.sort(order[held:]), np.sort(order[:held])


def fit_with_trainer(
    run: Run, classifier: Any, data: ArrayDataset, cfg: Any, use_cpu: bool
) -> tuple[dict[str, float], dict[str, float]]:
    """Train ``classifier`` in place as ``cfg`` (cifar_torch's, resolved) says; returns the
    last epoch's record with the summary, and the ``test_*`` metrics."""
    # compute_metrics needs scikit-learn: imported now, not inside epoch 0's val_wall_s.
    import sklearn.metrics  # noqa: F401 - compute_metrics needs it; not in epoch 0 val_wall_s
    import torch
    from torch import nn
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from mltrack.huggingface import MltrackCallback
    from mltrack.measure.efficiency import torch_flops_per_sample
    from mltrack.measure.metrics import classification_scores
    from mltrack.studies.vision import ImageArrays

    class WithLoss(nn.Module):
        """The classifier as the Trainer calls it: pixel values and labels in, loss out."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixel_values: Any, labels: Any = None) -> dict[str, Any]:
            logits = self.net(pixel_values)
            loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels)
            return {"loss": loss, "logits": logits}

    train_at, eval_at = holdout_split(len(data.y_train), cfg.seed)
    train = ImageArrays(data.x_train[train_at], data.y_train[train_at], as_dict=True)
    held = ImageArrays(data.x_train[eval_at], data.y_train[eval_at], as_dict=True)
    test = ImageArrays(data.x_test, data.y_test, as_dict=True)
    run.log_params({"vit.train_size": len(train), "vit.eval_size": len(held)})
    probe = torch.stack([train[i]["pixel_values"] for i in range(min(2, len(train)))])
    labels = torch.stack([train[i]["labels"] for i in range(len(probe))])
    flops = torch_flops_per_sample(classifier, nn.CrossEntropyLoss(), probe, labels)

    def compute_metrics(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        return classification_scores(prediction.label_ids, logits, cfg.test_batch_size)

    callback = MltrackCallback(run, flops_per_sample=flops)
    with tempfile.TemporaryDirectory(prefix="mltrack-trainer-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            report_to="none",
            save_strategy="no",
            eval_strategy="epoch",
            logging_strategy="epoch",
            num_train_epochs=cfg.epochs,
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.test_batch_size,
            gradient_accumulation_steps=cfg.accumulation_steps,
            fp16=cfg.precision == "mixed_fp16",
            bf16=cfg.precision == "mixed_bf16",
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            lr_scheduler_type="linear" if cfg.schedule == "seed" else "constant",
            seed=cfg.seed,
            dataloader_num_workers=cfg.num_workers,
            dataloader_pin_memory=cfg.pin_memory_in_effect,
            use_cpu=use_cpu,
            torch_compile=cfg.compile,  # the Trainer compiles the model itself
            torch_compile_mode=cfg.compile_mode if cfg.compile else None,
            logging_nan_inf_filter=False,  # a NaN step loss shows in the epoch's logged loss
            disable_tqdm=not sys.stderr.isatty(),  # bars on a terminal; in logs, a line an epoch
        )
        trainer = Trainer(
            model=WithLoss(classifier),
            args=args,
            train_dataset=train,
            eval_dataset=held,
            compute_metrics=compute_metrics,
            callbacks=[callback],
        )
        trainer.remove_callback(PrinterCallback)  # the callback's line says it, in mltrack's form
        trainer.train()
        final = trainer.evaluate(test, metric_key_prefix="test")
    tested = {
        k: float(v)
        for k, v in final.items()
        if isinstance(v, int | float) and k.removeprefix("test_") not in SKIPPED
    }
    return {**callback.record, **callback.summary}, tested
