"""Seed 004's training recipes (SahilNokhwal/annt) per model and arm, for cifar_torch.

Arms, untuned then tuned (the seed's "perf"), from the seed's code:

- ``resnet50`` (``ResNet50/main_resnet50_{10,100}_{noperf,perf}.py``): fp32, batch 128,
  gradients clipped to ±0.01 by value; tuned: fp16 autocast with no GradScaler, 2 accumulation
  steps (each loss / 2, the last partial window stepped), no clipping.
- ``efficientnet_b0`` (``EfficientNet/EfficientNet_cifar{10,100}_*.ipynb``): fp32, batch 96;
  tuned: apex AMP O2 (here fp16 autocast with a dynamic GradScaler), batch 200.
- ``vit`` (the ``ViT/`` screenshots; its notebooks are too large to read): fp32, batch 70;
  tuned: the Trainer's ``fp16`` and 16 accumulation steps (a choice: see ``DEVIATIONS``).

Shared by both arms: ResNet50: 30 epochs, Adam (weight decay 1e-3) under OneCycleLR (max 1e-3,
epochs × micro-batches per epoch steps) stepped every micro-batch, evaluation batch 256, random
crop (32, reflect padding 4) + horizontal flip, pinned memory, 2 loader workers.
EfficientNet-B0: 20 epochs, SGD Nesterov (momentum 0.9, weight decay 1e-3) with learning rates
1e-3 (stem and blocks), 2e-3 (the 1×1 head convolution), 1e-2 (the new classifier), ExponentialLR
0.975 stepped per epoch, RandomAffine (±2°, 2 % shift, 0.98-1.02 scale, 2° shear, filled with the
ImageNet mean colour) + flip, training batches ``drop_last``, pinned memory, 2 workers. ViT:
the Trainer's defaults (AdamW 5e-5, linear decay, no weight decay), evaluation batch 30,
10 epochs (15 on CIFAR-100), no augmentation. ``resnet50_torchvision`` takes the ResNet50 recipe.

``resolve`` fills a config's "the seed's" values (0, -1, "" or None) once, when the command
line is read; an explicit flag always wins. ``DEVIATIONS`` says where the seed's code could not
run as written (the experiment logs them as ``seed.deviations``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltrack.errors import bad_value

MODELS = ("resnet50", "resnet50_torchvision", "efficientnet_b0", "vit")
VIT_HUB_ID = "google/vit-base-patch16-224-in21k"


@dataclass(frozen=True)
class Arm:
    batch_size: int
    precision: str
    accumulation_steps: int = 1
    loss_scaling: bool = True  # a GradScaler under mixed_fp16
    clip_grad_value: float = 0.0


@dataclass(frozen=True)
class Recipe:
    untuned: Arm
    tuned: Arm
    epochs: dict[str, int]  # by dataset; "default" for the others
    learning_rate: float
    weight_decay: float
    pretrained: str
    num_workers: int
    augment: bool
    accumulation_loss: str = "samples"
    test_batch_size: int = 0  # fixed, else test_batch_factor × the training batch
    test_batch_factor: int = 1
    drop_last: bool = False


RESNET = Recipe(
    untuned=Arm(128, "fp32", clip_grad_value=0.01),
    tuned=Arm(128, "mixed_fp16", accumulation_steps=2, loss_scaling=False),
    epochs={"default": 30},
    learning_rate=1e-3,
    weight_decay=1e-3,
    pretrained="none",
    num_workers=2,
    augment=True,
    accumulation_loss="divide",
    test_batch_factor=2,
)
RECIPES = {
    "resnet50": RESNET,
    "resnet50_torchvision": RESNET,
    "efficientnet_b0": Recipe(
        untuned=Arm(96, "fp32"),
        tuned=Arm(200, "mixed_fp16"),
        epochs={"default": 20},
        learning_rate=1e-2,
        weight_decay=1e-3,
        pretrained="imagenet",
        num_workers=2,
        augment=True,
        drop_last=True,
    ),
    "vit": Recipe(
        untuned=Arm(70, "fp32"),
        tuned=Arm(70, "mixed_fp16", accumulation_steps=16),
        epochs={"default": 10, "cifar100": 15},
        learning_rate=5e-5,
        weight_decay=0.0,
        pretrained=VIT_HUB_ID,
        num_workers=0,
        augment=False,
        test_batch_size=30,
    ),
}

DEVIATIONS = (
    "all models: images stay uint8 until the model, whose first layer normalises (and resizes) "
    "them, so the exported model takes raw pixels; augmentation runs on 32x32 uint8 tensors in "
    "the loader (torchvision v2) where the seed used PIL transforms; the seed's untimed "
    "evaluation before training is not run",
    "resnet50 tuned: backward runs after the autocast block (PyTorch's documented use; the seed "
    "called it inside, which computes the same gradients)",
    "efficientnet_b0: torchvision's B0 on torchvision's ImageNet weights (the seed built its own "
    "B0 and mapped efficientnet-b0-08094119.pth onto it by key order); BatchNorm eps 1e-3 and "
    "momentum 0.01 and no stochastic depth, as the seed's B0 ran (its drop-connect result was "
    "discarded)",
    "efficientnet_b0: RandomAffine and flip act on the 32x32 image and the model resizes it to "
    "224 (bicubic) after, where the seed resized with PIL first; the transform parameters are "
    "relative, so the same transforms at a coarser sampling grid",
    "efficientnet_b0 tuned: apex AMP O2 (an fp16 model with fp32 master weights and dynamic loss "
    "scaling), deprecated by apex, is its maintained equivalent torch.amp: fp16 autocast with a "
    "dynamic GradScaler",
    "efficientnet_b0: no best-checkpoint selection and no flip test-time augmentation (the "
    "published 96.07% used both); test_* are the last epoch's evaluation",
    "vit: preprocessing inside the model: bilinear resize to the checkpoint's size and mean/std "
    "0.5 (the checkpoint's image processor); the seed's transforms, learning rate and schedule "
    "are not recoverable, so the Trainer's defaults run and no augmentation",
    "vit: the 45,000/5,000 split is a seeded random 10% of the training set; test_* add the "
    "10,000 test images the seed did not report",
    "vit tuned: gradient_accumulation_steps=16 is chosen (the seed's value is not recoverable): "
    "10 epochs of 643 micro-batches of 70 then end at optimizer step 410, near the seed's tuned "
    "evaluation curve's end (~420)",
)


BATCH_NORM = (
    "resnet50",
    "resnet50_torchvision",
    "efficientnet_b0",
)  # the models whose layers include BatchNorm
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device(device: str) -> None:
    """``UsageError`` naming ``--device`` unless this machine has it (CUDA devices counted by
    torch, as training will use them)."""
    if not DEVICE.fullmatch(device):
        raise bad_value("--device", device, "auto, cpu, cuda or cuda:N")
    if not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        have = f"cuda:0 to cuda:{count - 1}" if count else "no CUDA device here"
        raise bad_value("--device", device, f"auto, cpu or a device this machine has ({have})")


def resolved_device(device: str) -> str:
    """The device ``--device`` trains on: ``auto`` is ``cuda`` when torch sees one, else
    ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def as_in_effect(cfg: Any, values: dict[str, Any]) -> dict[str, Any]:
    """A config's params with ``pin_memory`` and ``device`` as in effect on this machine and
    the requests as ``*_requested`` (pinning needs a GPU to copy to; ``auto`` is a CUDA device
    or the CPU), as for precision."""
    values["pin_memory_requested"] = values.pop("pin_memory")
    values["pin_memory"] = values.pop("pin_memory_in_effect")
    values["device_requested"] = cfg.device
    values["device"] = resolved_device(cfg.device)
    return values


def note_pin_memory(cfg: Any) -> None:
    """Say once that pinned memory was asked for and is not in effect (no GPU to copy to)."""
    if cfg.pin_memory and not cfg.pin_memory_in_effect:
        print("pin_memory: asked, not in effect: no GPU to copy to (param pin_memory=False)")


def last_evaluation_as_test(metrics: dict[str, float]) -> dict[str, float]:
    """``test_*`` scores: the seed evaluated on the test set every epoch, so they are the last
    epoch's ``val_*`` (its timing aside)."""
    return {
        f"test_{k[4:]}": v for k, v in metrics.items() if k.startswith("val_") and k != "val_wall_s"
    }


def can_pin(device: str) -> bool:
    """Whether a DataLoader can pin memory for this ``--device``: only with a GPU to copy to
    (PyTorch ignores ``pin_memory=True`` without one, with a warning). Torch-free: NVML."""
    from mltrack.measure.environment import detect_hardware

    return device != "cpu" and bool(detect_hardware().gpus)


def resolve(cfg: Any) -> None:
    """Fill the seed's values for ``cfg.model`` and arm into the fields left at "the seed's"
    (0, -1, "" or None; any other value, a negative one included, is the user's to validate)."""
    recipe = RECIPES.get(cfg.model)
    if recipe is None:  # validate() names the bad --model
        return
    arm = recipe.tuned if cfg.tuned else recipe.untuned
    cfg.precision = cfg.precision or arm.precision
    if cfg.tuned and cfg.accumulation_steps == 1:
        cfg.accumulation_steps = arm.accumulation_steps
    cfg.batch_size = cfg.batch_size or arm.batch_size
    fixed = recipe.test_batch_size or recipe.test_batch_factor * cfg.batch_size
    cfg.test_batch_size = cfg.test_batch_size or fixed
    cfg.epochs = cfg.epochs or recipe.epochs.get(cfg.dataset, recipe.epochs["default"])
    cfg.learning_rate = cfg.learning_rate or recipe.learning_rate
    cfg.weight_decay = recipe.weight_decay if cfg.weight_decay == -1 else cfg.weight_decay
    cfg.pretrained = cfg.pretrained or recipe.pretrained
    cfg.num_workers = recipe.num_workers if cfg.num_workers == -1 else cfg.num_workers
    cfg.augment = recipe.augment if cfg.augment is None else cfg.augment
    cfg.loss_scaling = arm.loss_scaling if cfg.loss_scaling is None else cfg.loss_scaling
    cfg.clip_grad_value = arm.clip_grad_value if cfg.clip_grad_value == -1 else cfg.clip_grad_value
    cfg.accumulation_loss = cfg.accumulation_loss or recipe.accumulation_loss


# torch.compile's modes (torch.compile's documentation, torch 2.15).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def validate(cfg: Any) -> None:
    """The experiment's own flags, after ``resolve``; ``UsageError`` for the first bad one."""
    choices = {
        "--model": (cfg.model, MODELS),
        "--schedule": (cfg.schedule, ("seed", "constant")),
        "--accumulation-loss": (cfg.accumulation_loss, ("divide", "samples")),
        "--vit-size": (cfg.vit_size, ("base", "tiny")),
        "--compile-mode": (cfg.compile_mode, COMPILE_MODES),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise bad_value(name, value, f"one of {', '.join(allowed)}")
    for name in ("num_workers", "weight_decay", "clip_grad_value"):
        if getattr(cfg, name) < 0:
            raise bad_value(f"--{name.replace('_', '-')}", getattr(cfg, name), "a number >= 0")
    if cfg.test_batch_size < 1:
        raise bad_value("--test-batch-size", cfg.test_batch_size, "an integer >= 1")
    if cfg.batch_size == 1 and cfg.model in BATCH_NORM:
        raise bad_value(
            "--batch-size", 1, f"2 or more: {cfg.model} has BatchNorm layers, which cannot "
            "train on a batch of one sample"
        )  # fmt: skip
    check_device(cfg.device)
    if cfg.learning_rate <= 0:
        raise bad_value("--learning-rate", cfg.learning_rate, "a number > 0")
    _validate_pretrained(cfg.model, cfg.pretrained)
    if cfg.model != "vit":
        return
    for p in cfg.precision_list():
        if p not in ("fp32", "mixed_fp16", "mixed_bf16", "auto"):
            raise bad_value("--precision", p, "fp32, mixed_fp16, mixed_bf16 or auto for vit")
        if p == "mixed_fp16" and not can_pin(cfg.device):
            raise bad_value(
                "--precision",
                p,
                "fp32 or mixed_bf16 for vit without a GPU (transformers' Trainer runs no fp16 "
                "autocast on a CPU: it would train in fp32)",
            )
    if cfg.augment:
        raise bad_value("--augment", True, "--no-augment for vit (the seed's is not recoverable)")


def _validate_pretrained(model: str, pretrained: str) -> None:
    path = Path(pretrained).expanduser()
    if model == "vit":
        local = pretrained.startswith((".", "/", "~")) or path.exists()
        if local and not (path / "config.json").is_file():
            raise bad_value("--pretrained", pretrained, "a save_pretrained folder (config.json)")
        return
    named = ("none",) if model == "resnet50" else ("none", "imagenet")
    if pretrained not in named and not path.is_file():
        raise bad_value("--pretrained", pretrained, f"{' or '.join(named)} or a state_dict file")


def settings(cfg: Any) -> Any:
    """``mltrack.torch.Settings`` for the resolved ``cfg`` (imports torch)."""
    from mltrack import torch as mt

    return mt.Settings(
        precision=cfg.precision,
        accumulation_steps=cfg.accumulation_steps,
        pin_memory=cfg.pin_memory_in_effect,
        non_blocking=cfg.pin_memory_in_effect,
        num_workers=cfg.num_workers,
        channels_last=cfg.channels_last,
        device=cfg.device,
        loss_scaling=bool(cfg.loss_scaling),
        clip_grad_value=cfg.clip_grad_value,
        accumulation_loss=cfg.accumulation_loss,
        compile=cfg.compile,
        compile_mode=cfg.compile_mode,
    )


def optimizer(cfg: Any, net: Any, steps: int) -> tuple[Any, Any, str]:
    """The seed's optimizer for ``cfg.model``'s ``net`` (an ``ImageInput`` then the backbone),
    its learning-rate scheduler (None with ``--schedule constant``) and when to step it;
    ``steps``: micro-batches per epoch."""
    import torch

    lr, decay, constant = cfg.learning_rate, cfg.weight_decay, cfg.schedule == "constant"
    if cfg.model == "efficientnet_b0":
        backbone = net[-1]
        groups = [
            {"params": backbone.features[:8].parameters(), "lr": lr * 0.1},  # stem, blocks
            {"params": backbone.features[8].parameters(), "lr": lr * 0.2},  # 1x1 head conv
            {"params": backbone.classifier.parameters(), "lr": lr},  # the new classifier
        ]
        sgd = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=decay, nesterov=True)
        decaying = None if constant else torch.optim.lr_scheduler.ExponentialLR(sgd, gamma=0.975)
        return sgd, decaying, "epoch"
    adam = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=decay)
    if constant:
        return adam, None, "epoch"
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(
        adam, lr, epochs=cfg.epochs, steps_per_epoch=steps
    )
    return adam, one_cycle, "micro_batch"
