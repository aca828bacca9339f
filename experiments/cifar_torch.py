"""ResNet50, EfficientNet-B0 and ViT on CIFAR-10/100 as seed 004 trained them, with and without
its speed techniques (004_a8bbd32af544c53e: SahilNokhwal/annt, "Accelerating Neural Network
Training: A Brief Review"). Defaults: the seed's code per model and arm (studies/recipes.py):

- resnet50: the CIFAR ResNet50 of ResNet50/main_resnet50_*.py (3x3 stride-1 stem, no max-pool)
  from scratch; batch 128 (evaluation 256), 30 epochs, Adam (weight decay 1e-3) under OneCycleLR
  (max 1e-3) stepped every micro-batch, random crop + flip, the dataset's mean/std, pinned
  memory, 2 loader workers; fp32, gradients clipped to +-0.01. --tuned ("perf"): fp16 autocast
  without GradScaler, 2 accumulation steps (each loss / 2), no clipping.
- efficientnet_b0: torchvision's B0 on ImageNet weights, resized to 224 (bicubic) in the model,
  RandomAffine + flip, SGD Nesterov at 1e-3/2e-3/1e-2 (blocks/head conv/classifier), ExponentialLR
  0.975 per epoch, 20 epochs, batch 96; --tuned: batch 200, fp16 autocast + dynamic loss scaling.
- vit: google/vit-base-patch16-224-in21k with a new head through transformers.Trainer (mltrack
  as a TrainerCallback), batch 70 (evaluation 30), 10 epochs (15 on CIFAR-100), 45,000 images
  and 5,000 held out; --tuned: the Trainer's fp16 (needs a GPU), 16 accumulation steps.

Metrics add macro precision/recall/F1, top-5 and the ResNet50 files' F1 (f1_micro_batch_mean).
mltrack's choices are flags: --model resnet50_torchvision, --precision auto, --loss-scaling,
--accumulation-loss samples, --schedule constant, --no-augment, --pretrained none (--vit-size
tiny on a CPU). pin_memory and device are logged as they ran, the requests as *_requested.
Deviations (seed.deviations): uint8 data until the model normalises and resizes it; EfficientNet
on torchvision's B0 and weights, apex O2 as torch.amp, no checkpoint selection or test flips;
the ViT's preprocessing, learning rate, schedule and tuned accumulation are not recoverable.

    python -m experiments.cifar_torch --dataset cifar10 --data-dir ~/data [--tuned]
    python -m experiments.cifar_torch --model efficientnet_b0 --dataset cifar100 --tuned
    python -m experiments.cifar_torch --model vit --pretrained none --vit-size tiny \
        --dataset synthetic --epochs 2 --precision mixed_bf16
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mltrack.config import ExperimentConfig
from mltrack.config import option as opt
from mltrack.experiment import Experiment
from mltrack.measure.precision import PRECISIONS
from mltrack.studies import recipes, vision
from mltrack.studies.data import ArrayDataset, synthetic
from mltrack.tracking.run import Run


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("cifar10", "cifar100", "synthetic")

    precision: str = opt("", f"one of {', '.join(PRECISIONS)} or a list ('': the seed's)")
    batch_size: int = opt(0, "samples per micro-batch (0: the seed's for the model and arm)")
    epochs: int = opt(0, "training epochs (0: the seed's for the model and dataset)")
    model: str = opt("resnet50", f"one of {', '.join(recipes.MODELS)}")
    tuned: bool = opt(False, "the seed's perf arm: its precision, batch and accumulation")
    pretrained: str = opt("", "none, imagenet, a state_dict file, hub id or folder ('': seed's)")
    vit_size: str = opt("base", "the ViT built by --pretrained none: base or tiny (32x32)")
    test_batch_size: int = opt(0, "evaluation batch (0: the seed's)")
    learning_rate: float = opt(0.0, "peak/base rate (0: the seed's)")
    weight_decay: float = opt(-1.0, "weight decay (-1: the seed's)")
    schedule: str = opt("seed", "seed (OneCycle, exponential, linear) or constant")
    augment: bool | None = opt(None, "the seed's augmentation (None: as the model's seed)")
    clip_grad_value: float = opt(-1.0, "clip gradients to +-value (0: off; -1: the seed's)")
    loss_scaling: bool | None = opt(None, "a GradScaler under mixed_fp16 (None: the seed's)")
    accumulation_loss: str = opt("", "divide (loss / k) or samples (one big batch) ('': seed's)")
    pin_memory: bool = opt(True, "ask the DataLoader to pin memory (the seed did)")
    num_workers: int = opt(-1, "DataLoader worker processes (-1: the seed's)")
    channels_last: bool = opt(False, "NHWC memory format")
    compile_mode: str = opt("default", "torch.compile's mode with --compile (max-autotune ...)")
    synthetic_size: int = opt(256, "images for --dataset synthetic")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N")
    pin_memory_in_effect: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pin_memory_in_effect = self.pin_memory and recipes.can_pin(self.device)

    def logged(self) -> dict[str, Any]:
        return recipes.as_in_effect(self, super().logged())

    def expand(self) -> None:
        recipes.resolve(self)

    def validate(self) -> None:
        recipes.validate(self)  # --model first: an unknown one has no seed's values
        super().validate()


def load_data(cfg: Config) -> ArrayDataset:
    vision.ensure_pretrained(cfg.model, cfg.pretrained)  # offline: one line, before data or run
    recipes.note_pin_memory(cfg)  # one line, not torch's warnings
    if cfg.dataset == "synthetic":
        n = cfg.synthetic_size
        return synthetic.images((32, 32, 3), 10, n, max(n // 4, 8), cfg.seed)
    return vision.load_cifar(cfg.dataset, cfg.data_dir)


def build_model(cfg: Config, num_classes: int) -> Any:
    recipes.resolve(cfg)  # a Config built in code (benchmarks) has not been through the parser
    return vision.image_classifier(
        cfg.model, cfg.pretrained, num_classes, cfg.dataset, cfg.vit_size
    )


def loaders(cfg: Config, data: ArrayDataset) -> tuple[Any, Any]:
    recipes.resolve(cfg)
    augment = vision.augmentation(cfg.model) if cfg.augment else None
    return vision.array_loaders(
        data, cfg.batch_size, cfg.pin_memory_in_effect, cfg.num_workers, cfg.seed,
        test_batch_size=cfg.test_batch_size, transform=augment,
        drop_last=recipes.RECIPES[cfg.model].drop_last)  # fmt: skip


def train(cfg: Config, data: ArrayDataset, run: Run) -> dict[str, float]:
    import torch

    from mltrack import torch as mt

    torch.manual_seed(cfg.seed)
    settings = recipes.settings(cfg)
    model = build_model(cfg, data.num_classes)
    run.log_params({"model.parameters": sum(p.numel() for p in model.parameters())})
    if cfg.model == "vit":  # through transformers.Trainer, as the seed
        from mltrack.studies.vit import fit_with_trainer

        device = settings.resolved_device()
        metrics, test = fit_with_trainer(run, model.to(device), data, cfg, device.type == "cpu")
    else:
        model = mt.prepare(model, settings, cfg.precision)
        train_loader, test_loader = loaders(cfg, data)
        optimizer, scheduler, every = recipes.optimizer(cfg, model, len(train_loader))
        model, metrics = mt.fit(
            run, model, optimizer, train_loader, test_loader, epochs=cfg.epochs,
            settings=settings, scheduler=scheduler, scheduler_every=every,
        )  # fmt: skip
        test = recipes.last_evaluation_as_test(metrics)
    run.log_metrics(test, step=0)
    probe = torch.from_numpy(data.x_test[:8]).permute(0, 3, 1, 2).contiguous()
    if cfg.export:
        mt.export(run, model, probe, precision=cfg.precision, register=cfg.register)
    return {**metrics, **test}


EXPERIMENT = Experiment(
    "cifar_torch", Config, load_data, train, __doc__ or "", "torch", deviations=recipes.DEVIATIONS
)
main = EXPERIMENT.main  # python -m experiments.NAME, or main(argv) from code


if __name__ == "__main__":
    sys.exit(main())
