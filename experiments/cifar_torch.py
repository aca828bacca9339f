"""ResNet50, EfficientNet-B0 and ViT on CIFAR-10/100, with and without the speed techniques
(seed 004_a8bbd32af544c53e, "Accelerating Neural Network Training: A Brief Review").

The seed trains each model with and without automatic mixed precision (autocast + GradScaler),
gradient accumulation and pinned memory, and reports accuracy, F1 and execution time. Here
``--tuned`` switches all three on (AMP as ``--precision auto`` resolves it: the machine's fast
mixed precision, logged with its reason; 4 accumulation steps; pinned memory), or each alone.

    python -m experiments.cifar_torch --model resnet50 --dataset cifar10 --data-dir ~/data
    python -m experiments.cifar_torch --model resnet50 --dataset synthetic --epochs 1 --tuned
    python -m experiments.cifar_torch --model vit --dataset synthetic --pretrained ./my-vit
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mltrack import vision
from mltrack.config import ExperimentConfig, help_
from mltrack.data import ArrayDataset, DataUnavailable, cifar, synthetic
from mltrack.errors import bad_value
from mltrack.experiment import Experiment
from mltrack.run import Run
from mltrack.vision import MODELS

CLASSES = {"cifar10": 10, "cifar100": 100, "synthetic": 10}
PROBE_SIZE = 8


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("cifar10", "cifar100", "synthetic")

    batch_size: int = 64
    epochs: int = 2
    model: str = field(default="resnet50", metadata=help_(f"one of {', '.join(MODELS)}"))
    tuned: bool = field(
        default=False,
        metadata=help_(
            "the seed's techniques: automatic mixed precision (--precision auto: the machine's "
            "fast one), 4 accumulation steps (for --accumulation-steps 1) and pinned memory"
        ),
    )
    pin_memory: bool = field(default=False, metadata=help_("DataLoader pin_memory"))
    num_workers: int = field(default=0, metadata=help_("DataLoader worker processes"))
    channels_last: bool = field(default=False, metadata=help_("NHWC memory format"))
    pretrained: str = field(
        default="",
        metadata=help_(
            "torchvision: 'imagenet' or a state_dict file; vit: a hub id or a save_pretrained dir"
        ),
    )
    learning_rate: float = field(default=1e-3, metadata=help_("Adam learning rate"))
    synthetic_size: int = field(default=256, metadata=help_("images for --dataset synthetic"))
    device: str = field(default="auto", metadata=help_("auto, cpu, cuda or cuda:N"))

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
    return vision.image_classifier(cfg.model, cfg.pretrained, num_classes)


def loaders(cfg: Config, data: ArrayDataset) -> tuple[Any, Any]:
    return vision.array_loaders(data, cfg.batch_size, cfg.pin_memory, cfg.num_workers, cfg.seed)


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
        export_torch(run, model, probe, cfg)
    return {**summary, **test}


EXPERIMENT = Experiment("cifar_torch", Config, load_data, train, __doc__ or "", framework="torch")


main = EXPERIMENT.main  # python -m experiments.NAME, or main(argv) from code


if __name__ == "__main__":
    sys.exit(main())
