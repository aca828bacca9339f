"""ResNet50, EfficientNet-B0 and ViT on CIFAR-10/100, with and without the speed techniques
(seed 004_a8bbd32af544c53e, "Accelerating Neural Network Training: A Brief Review").

The seed trains each model with and without automatic mixed precision (autocast + GradScaler),
gradient accumulation and pinned memory, and reports accuracy, F1 and execution time. Here
``--tuned`` switches all three on (automatic mixed precision, 4 accumulation steps, pinned
memory); each can also be set alone. Its precision is what ``--precision auto`` resolves to,
the machine's fast mixed precision (mixed_bf16 on a bf16 CPU or an sm_80+ GPU, mixed_fp16 on
an sm_70 GPU), logged with its reason; an explicit ``--precision mixed_fp16`` runs fp16 autocast
with a GradScaler even on a CPU, where it is slow.

    python -m experiments.cifar_torch --model resnet50 --dataset cifar10 --data-dir ~/data
    python -m experiments.cifar_torch --model resnet50 --dataset synthetic --epochs 1 --tuned
    python -m experiments.cifar_torch --model vit --dataset synthetic --pretrained ./my-vit
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mltrack.config import ExperimentConfig
from mltrack.data import ArrayDataset, DataUnavailable, cifar, synthetic
from mltrack.errors import bad_value
from mltrack.experiment import Experiment
from mltrack.precision import COMPUTE_DTYPE
from mltrack.run import Run

MODELS = ("resnet50", "efficientnet_b0", "vit")
CLASSES = {"cifar10": 10, "cifar100": 100, "synthetic": 10}
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # CIFAR-10 channel statistics
PROBE_SIZE = 8


def flag_help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("cifar10", "cifar100", "synthetic")

    batch_size: int = 64
    epochs: int = 2
    model: str = field(default="resnet50", metadata=flag_help(f"one of {', '.join(MODELS)}"))
    tuned: bool = field(
        default=False,
        metadata=flag_help(
            "the seed's techniques: automatic mixed precision (--precision auto: the machine's "
            "fast one), 4 accumulation steps (for --accumulation-steps 1) and pinned memory"
        ),
    )
    pin_memory: bool = field(default=False, metadata=flag_help("DataLoader pin_memory"))
    num_workers: int = field(default=0, metadata=flag_help("DataLoader worker processes"))
    channels_last: bool = field(default=False, metadata=flag_help("NHWC memory format"))
    pretrained: str = field(
        default="",
        metadata=flag_help(
            "torchvision: 'imagenet' or a state_dict file; vit: a hub id or a save_pretrained dir"
        ),
    )
    learning_rate: float = field(default=1e-3, metadata=flag_help("Adam learning rate"))
    synthetic_size: int = field(default=256, metadata=flag_help("images for --dataset synthetic"))
    device: str = field(default="auto", metadata=flag_help("auto, cpu, cuda or cuda:N"))

    def expand(self) -> None:
        if self.tuned:  # --precision auto already resolves to the fast mixed precision
            self.accumulation_steps = 4 if self.accumulation_steps == 1 else self.accumulation_steps
            self.pin_memory = True

    def validate(self) -> None:
        super().validate()
        if self.model not in MODELS:
            raise bad_value("--model", self.model, f"one of {', '.join(MODELS)}")
        if self.num_workers < 0:
            raise bad_value("--num-workers", self.num_workers, "an integer >= 0")
        if (
            self.pretrained
            and self.model != "vit"
            and self.pretrained != "imagenet"
            and not Path(self.pretrained).is_file()
        ):
            raise bad_value("--pretrained", self.pretrained, "'imagenet' or a state_dict file")


def load_data(cfg: Config) -> ArrayDataset:
    if cfg.dataset == "synthetic":
        n = cfg.synthetic_size
        return synthetic.images((32, 32, 3), 10, n, max(n // 4, 8), cfg.seed)
    if cfg.data_dir:
        return cifar.load_from_dir(cfg.dataset, Path(cfg.data_dir))
    import torchvision

    root = Path.home() / ".cache" / "mltrack" / "torchvision"
    make = (
        torchvision.datasets.CIFAR10 if cfg.dataset == "cifar10" else torchvision.datasets.CIFAR100
    )
    try:
        make(str(root), train=True, download=True)
    except Exception as exc:
        raise DataUnavailable(
            f"--dataset {cfg.dataset}: could not download it ({type(exc).__name__}); fetch "
            f"{cifar.URLS[cfg.dataset]} and pass --data-dir DIR, or use --dataset synthetic"
        ) from exc
    return cifar.load_from_dir(cfg.dataset, root)


def build_model(cfg: Config, num_classes: int) -> Any:
    """The backbone behind a preprocessing layer (uint8 NCHW in, logits out)."""
    import torch
    import torchvision
    from torch import nn

    from mltrack import torch as mt

    size = 32
    if cfg.model == "vit":
        from transformers import ViTConfig, ViTForImageClassification

        if cfg.pretrained:
            vit = ViTForImageClassification.from_pretrained(
                cfg.pretrained, num_labels=num_classes, ignore_mismatched_sizes=True
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
        make = getattr(torchvision.models, cfg.model)
        backbone = make(weights="DEFAULT" if cfg.pretrained == "imagenet" else None)
        if cfg.pretrained and cfg.pretrained != "imagenet":
            backbone.load_state_dict(torch.load(cfg.pretrained, map_location="cpu"))
        head = backbone.fc if cfg.model == "resnet50" else backbone.classifier[-1]
        replacement = nn.Linear(head.in_features, num_classes)
        if cfg.model == "resnet50":
            backbone.fc = replacement
        else:
            backbone.classifier[-1] = replacement
    return nn.Sequential(mt.ImageInput(MEAN, STD, 32, size), backbone)


def loaders(cfg: Config, data: ArrayDataset) -> tuple[Any, Any]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    def tensors(x: Any, y: Any) -> TensorDataset:
        return TensorDataset(
            torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)
        )

    common = {
        "batch_size": cfg.batch_size,
        "pin_memory": cfg.pin_memory,
        "num_workers": cfg.num_workers,
    }
    generator = torch.Generator().manual_seed(cfg.seed)
    return (
        DataLoader(
            tensors(data.x_train, data.y_train), shuffle=True, generator=generator, **common
        ),
        DataLoader(tensors(data.x_test, data.y_test), shuffle=False, **common),
    )


def train(cfg: Config, data: ArrayDataset, run: Run) -> dict[str, float]:
    import torch

    from mltrack import torch as mt
    from mltrack.artifacts import export_torch

    torch.manual_seed(cfg.seed)
    settings = mt.Settings(
        precision=cfg.precision,
        accumulation_steps=cfg.accumulation_steps,
        pin_memory=cfg.pin_memory,
        non_blocking=cfg.pin_memory,
        num_workers=cfg.num_workers,
        channels_last=cfg.channels_last,
        device=cfg.device,
    )
    model = mt.prepare(build_model(cfg, CLASSES[cfg.dataset]), settings, cfg.precision)
    run.log_params({"model.parameters": sum(p.numel() for p in model.parameters())})
    train_loader, test_loader = loaders(cfg, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    model, summary = mt.fit(
        run, model, optimizer, train_loader, test_loader, epochs=cfg.epochs, settings=settings
    )
    final = mt.evaluate(model, test_loader, torch.nn.CrossEntropyLoss(), settings, cfg.precision)
    test = {f"test_{k}": v for k, v in final.items()}
    run.log_metrics(test, step=0)
    probe = torch.from_numpy(data.x_test[:PROBE_SIZE]).permute(0, 3, 1, 2).contiguous()
    if cfg.export:
        export_torch(run, model, probe, COMPUTE_DTYPE[cfg.precision])
    return {**summary, **test}


EXPERIMENT = Experiment("cifar_torch", Config, load_data, train, __doc__ or "", framework="torch")


def main(argv: Sequence[str] | None = None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    sys.exit(main())
