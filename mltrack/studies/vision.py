"""The seed-004 networks, their pretrained weights, and CIFAR loaders (``experiments.cifar_torch``).

Every network sits behind ``mltrack.torch.ImageInput``: it takes NCHW uint8 pixel values
(0-255), normalises them with the statistics its recipe uses and resizes them to the size it
was built for, inside the model, so the exported model needs no preprocessing.

- ``resnet50``: the seed's CIFAR ResNet50 (``mltrack.studies.cifar_resnet``), the dataset's own
  mean/std (CIFAR-10's for synthetic data), 32×32.
- ``resnet50_torchvision``: torchvision's ImageNet ResNet50 (7×7 stride-2 stem, max-pool).
- ``efficientnet_b0``: torchvision's B0 with the seed's BatchNorm (eps 1e-3, momentum 0.01) and
  no stochastic depth; ImageNet mean/std; resized to 224, bicubic; a new classifier.
- ``vit``: a Hugging Face ``ViTForImageClassification`` with a new head: a hub id or a
  ``save_pretrained`` folder, or from scratch (``base`` is ViT-Base/16 at 224, ``tiny`` a
  32×32 one a CPU trains); mean/std 0.5 (the in21k checkpoint's image processor), bilinear.

Pretrained weights: ``ensure_pretrained`` runs before any data loads and any run exists. It
finds torchvision's ImageNet file in torch's hub cache (or downloads it there), or the hub
model in Hugging Face's cache (or finds the hub reachable); otherwise one line naming
``--pretrained none``. A file or folder path is loaded as it is.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from mltrack.errors import UsageError
from mltrack.studies.data import ArrayDataset, DataUnavailable, cifar

STATS = {  # the seed's per-dataset channel statistics (ResNet50 files)
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
VIT_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_MEAN_COLOUR = [124, 117, 104]  # the EfficientNet notebooks' RandomAffine fill
TORCHVISION = {"resnet50_torchvision": "resnet50", "efficientnet_b0": "efficientnet_b0"}
VIT_SIZES: dict[str, dict[str, int]] = {
    "base": {},  # ViTConfig's defaults: ViT-Base/16 at 224
    "tiny": {
        "image_size": 32,
        "patch_size": 4,
        "hidden_size": 192,
        "num_hidden_layers": 6,
        "num_attention_heads": 3,
        "intermediate_size": 384,
    },
}


def image_classifier(
    model: str, pretrained: str, num_classes: int, dataset: str = "cifar10", vit_size: str = "base"
) -> Any:
    """A seed-004 network behind its ``ImageInput`` (uint8 NCHW 32×32 in, logits out)."""
    from torch import nn

    from mltrack import torch as mt

    if model == "vit":
        vit = _vit(pretrained, num_classes, vit_size)
        size = int(vit.config.image_size)
        return nn.Sequential(mt.ImageInput(*VIT_STATS, 32, size), mt.Logits(vit))
    if model == "resnet50":
        from mltrack.studies.cifar_resnet import CifarResNet50

        net = CifarResNet50(num_classes)
        if pretrained != "none":
            net.load_state_dict(_state_dict(pretrained))
        return nn.Sequential(mt.ImageInput(*STATS.get(dataset, STATS["cifar10"]), 32, 32), net)
    backbone = _torchvision(model, pretrained)
    if model == "efficientnet_b0":
        head = backbone.classifier[-1]
        backbone.classifier[-1] = nn.Linear(head.in_features, num_classes)
        return nn.Sequential(mt.ImageInput(*IMAGENET, 32, 224, mode="bicubic"), backbone)
    backbone.fc = nn.Linear(backbone.fc.in_features, num_classes)
    return nn.Sequential(mt.ImageInput(*STATS.get(dataset, STATS["cifar10"]), 32, 32), backbone)


def _state_dict(path: str) -> Any:
    import torch

    return torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)


def _torchvision(model: str, pretrained: str) -> Any:
    """An ImageNet-shaped (1000-class) torchvision network, its weights as ``pretrained`` says."""
    import functools

    import torchvision
    from torch import nn

    kwargs: dict[str, Any] = {}
    if model == "efficientnet_b0":  # the seed's own B0: BatchNorm eps 1e-3, momentum 0.01,
        kwargs["norm_layer"] = functools.partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)
        kwargs["stochastic_depth_prob"] = 0.0  # and a drop-connect whose result it discarded
    net = getattr(torchvision.models, TORCHVISION[model])(weights=None, **kwargs)
    if pretrained == "imagenet":
        weights = torchvision.models.get_model_weights(TORCHVISION[model]).DEFAULT
        net.load_state_dict(weights.get_state_dict(progress=False))
    elif pretrained != "none":
        net.load_state_dict(_state_dict(pretrained))
    return net


def _vit(pretrained: str, num_classes: int, size: str) -> Any:
    from transformers import ViTConfig, ViTForImageClassification

    if pretrained == "none":
        return ViTForImageClassification(ViTConfig(num_labels=num_classes, **VIT_SIZES[size]))
    reference = str(Path(pretrained).expanduser()) if Path(pretrained).exists() else pretrained
    options = {"num_labels": num_classes, "ignore_mismatched_sizes": True}
    try:  # the cache first: online, the hub is asked again (and retried for 30 s when away)
        return ViTForImageClassification.from_pretrained(
            reference, local_files_only=True, **options
        )
    except OSError:
        return ViTForImageClassification.from_pretrained(reference, **options)


# -- pretrained weights, before any data or run ---------------------------------------------
def ensure_pretrained(model: str, pretrained: str) -> None:
    """Make sure ``pretrained`` can be loaded: cached, downloaded, or reachable. ``UsageError``
    (exit 2, one line) naming the flag for a from-scratch model otherwise."""
    if pretrained == "none" or Path(pretrained).expanduser().exists():
        return
    if model == "vit":
        _ensure_hub(pretrained)
    elif pretrained == "imagenet":
        _ensure_torchvision(model)


def _ensure_torchvision(model: str) -> None:
    import torch
    import torchvision

    url = torchvision.models.get_model_weights(TORCHVISION[model]).DEFAULT.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if cached.is_file():
        return
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    except Exception as exc:
        raise UsageError(
            f"--pretrained: could not load torchvision's ImageNet weights for {model} (offline?"
            f" {type(exc).__name__}); pass --pretrained none to train from scratch, or put "
            f"{cached.name} in {cached.parent}"
        ) from exc


def _ensure_hub(repo_id: str) -> None:
    """A hub model whose config and weights are cached, or a reachable hub (quick: a socket,
    not huggingface_hub's five retries over 30 s); ``from_pretrained`` downloads it later."""
    from huggingface_hub import constants, try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, name), str)

    if cached("config.json") and (cached("model.safetensors") or cached("pytorch_model.bin")):
        return
    host = urlparse(constants.ENDPOINT).hostname or ""
    if not constants.HF_HUB_OFFLINE:
        try:
            socket.create_connection((host, 443), timeout=5).close()
            return
        except OSError:
            pass
    raise UsageError(
        f"--pretrained: could not load {repo_id} from the Hugging Face hub (offline?) nor find "
        "it in its cache; pass --pretrained none (with --vit-size tiny on a CPU) to train from "
        "scratch, or a save_pretrained folder"
    )


# -- data -------------------------------------------------------------------------------------
def load_cifar(which: str, data_dir: str) -> ArrayDataset:
    """CIFAR-10/100 from ``--data-dir``, else through torchvision's downloader."""
    if data_dir:
        return cifar.load_from_dir(which, Path(data_dir))
    import torchvision

    root = Path.home() / ".cache" / "mltrack" / "torchvision"
    make = torchvision.datasets.CIFAR10 if which == "cifar10" else torchvision.datasets.CIFAR100
    try:
        make(str(root), train=True, download=True)
    except Exception as exc:
        raise DataUnavailable(
            f"--dataset {which}: could not download it ({type(exc).__name__}); fetch "
            f"{cifar.URLS[which]} and pass --data-dir DIR, or use --dataset synthetic"
        ) from exc
    return cifar.load_from_dir(which, root)


def augmentation(model: str) -> Any:
    """The seed's training augmentation for ``model`` on a uint8 CHW 32×32 tensor."""
    from torchvision.transforms import v2

    if model == "efficientnet_b0":
        affine = v2.RandomAffine(
            degrees=2,
            translate=(0.02, 0.02),
            scale=(0.98, 1.02),
            shear=2,
            fill=IMAGENET_MEAN_COLOUR,
        )
        return v2.Compose([affine, v2.RandomHorizontalFlip()])
    if model.startswith("resnet50"):
        return v2.Compose(
            [v2.RandomCrop(32, padding=4, padding_mode="reflect"), v2.RandomHorizontalFlip()]
        )
    return None


class ImageArrays:
    """NHWC uint8 arrays as a map-style dataset of (CHW uint8 tensor, label), each image
    transformed when drawn (in the loader's workers); ``as_dict`` for transformers' Trainer."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, transform: Any = None, as_dict: bool = False
    ) -> None:
        import torch

        self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.transform = transform
        self.as_dict = as_dict

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Any:
        image = self.x[i] if self.transform is None else self.transform(self.x[i])
        return {"pixel_values": image, "labels": self.y[i]} if self.as_dict else (image, self.y[i])


def array_loaders(
    data: ArrayDataset,
    batch_size: int,
    pin_memory: bool,
    num_workers: int,
    seed: int,
    *,
    test_batch_size: int = 0,
    transform: Any = None,
    drop_last: bool = False,
) -> tuple[Any, Any]:
    """Training (shuffled, seeded, ``transform``-ed, ``drop_last``) and test loaders."""
    import torch
    from torch.utils.data import DataLoader

    common = {"pin_memory": pin_memory, "num_workers": num_workers}
    generator = torch.Generator().manual_seed(seed)
    train = ImageArrays(data.x_train, data.y_train, transform)
    test = ImageArrays(data.x_test, data.y_test)
    return (
        DataLoader(
            train,
            batch_size=batch_size,
            shuffle=True,
            generator=generator,
            drop_last=drop_last,
            **common,
        ),
        DataLoader(test, batch_size=test_batch_size or batch_size, shuffle=False, **common),
    )
