"""Image folders for binary classification (seed 001, cats vs dogs).

The layout the seed's Kaggle archive unpacks to, and what ``image_dataset_from_directory`` and
``flow_from_directory`` both read: ``ROOT/train/{cats,dogs}/*.jpg`` and
``ROOT/test/{cats,dogs}/*.jpg``. Class labels follow the sorted folder names (cats 0, dogs 1).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mltrack.data.core import DataUnavailable

SPLITS = ("train", "test")
CLASSES = ("cats", "dogs")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SEED_ARCHIVE = "https://storage.googleapis.com/data-lake-bucket-new/cat-vs-dogs-kaggle.zip"
# Written last by write_synthetic: a folder without it was not (completely) written there.
MARKER = "synthetic.json"


@dataclass
class ImageFolder:
    name: str
    root: Path
    counts: dict[str, int]  # "train/cats" -> number of images

    @property
    def train_size(self) -> int:
        return sum(n for key, n in self.counts.items() if key.startswith("train/"))

    @property
    def test_size(self) -> int:
        return sum(n for key, n in self.counts.items() if key.startswith("test/"))

    def params(self) -> dict[str, object]:
        digest = hashlib.sha1()
        for split in SPLITS:
            for label in CLASSES:
                for path in sorted((self.root / split / label).iterdir()):
                    digest.update(f"{split}/{label}/{path.name}:{path.stat().st_size}".encode())
        return {
            "dataset.name": self.name,
            "dataset.train_size": self.train_size,
            "dataset.test_size": self.test_size,
            "dataset.num_classes": len(CLASSES),
            "dataset.hash": digest.hexdigest()[:12],
            "dataset.source": str(self.root),
        }

    def mlflow_inputs(self) -> list[tuple[str, Any]]:
        """The train and test folders as MLflow datasets (source: the folder)."""
        from mlflow.data.meta_dataset import MetaDataset

        from mltrack.data.core import dataset_source

        digest = str(self.params()["dataset.hash"])
        return [
            (
                context,
                MetaDataset(
                    dataset_source(str(self.root / split)),
                    f"{self.name}-{split}",
                    f"{digest}-{split}",
                ),
            )
            for context, split in (("training", "train"), ("evaluation", "test"))
        ]


def open_folder(root: Path, name: str = "cats_vs_dogs") -> ImageFolder:
    """Check the layout and count images; a clear error names the first missing folder."""
    counts = {}
    for split in SPLITS:
        for label in CLASSES:
            folder = root / split / label
            if not folder.is_dir():
                raise DataUnavailable(
                    f"--data-dir: {folder} not found; expected "
                    f"{root}/{{train,test}}/{{cats,dogs}}/ (unzip {SEED_ARCHIVE} there), "
                    "or use --dataset synthetic offline"
                )
            images = [p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS]
            if not images:
                raise DataUnavailable(f"--data-dir: {folder} holds no images ({EXTENSIONS})")
            counts[f"{split}/{label}"] = len(images)
    return ImageFolder(name, root, counts)


def synthetic_folder(
    root: Path, per_class: int, size: int = 150, seed: int = 0, *, ours: bool = False
) -> ImageFolder:
    """The synthetic folder in ``root``, written there first unless a complete one with these
    settings is there. ``ours``: ``root`` is mltrack's own cache, where a folder an interrupted
    run left half-written is written again; a user's ``--data-dir`` holding ``train/`` or
    ``test/`` that this did not write (their real images, say) is never written into."""
    settings = {"per_class": per_class, "size": size, "seed": seed}
    try:
        found = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        found = None
    if found == settings:
        return open_folder(root, "synthetic_cats_dogs")
    if isinstance(found, dict) and not ours:
        raise DataUnavailable(
            f"--data-dir: {root} holds synthetic images written with --synthetic-per-class "
            f"{found.get('per_class')} and --seed {found.get('seed')}, not {per_class} and "
            f"{seed}; pass those, or another folder"
        )
    splits = [root / split for split in SPLITS if (root / split).exists()]
    if splits and not ours:
        raise DataUnavailable(
            f"--data-dir: {splits[0]} exists without the {MARKER} that --dataset synthetic "
            "writes last (real images, or an interrupted write); pass a new or empty folder"
        )
    for folder in splits:  # ours, half-written or of other settings
        shutil.rmtree(folder)
    try:
        return write_synthetic(root, per_class, size, seed)
    except OSError as exc:
        raise DataUnavailable(
            f"--data-dir: cannot write the synthetic images into {root} ({exc.strerror or exc})"
        ) from exc


def write_synthetic(root: Path, per_class: int, size: int = 150, seed: int = 0) -> ImageFolder:
    """A small learnable image folder: 'cats' are warm discs, 'dogs' cool stripes, plus noise."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, n in (("train", per_class), ("test", max(per_class // 4, 2))):
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.normal(110, 40, size=(size, size, 3))
                if label == "cats":
                    cy, cx = rng.integers(size // 4, 3 * size // 4, 2).tolist()
                    r = int(rng.integers(size // 8, size // 3))
                    mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
                    img[mask] += (90, 40, -40)
                else:
                    period = int(rng.integers(8, 20))
                    mask = ((xx + rng.integers(0, period)) // (period // 2)) % 2 == 0
                    img[mask] += (-40, 20, 90)
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                    folder / f"{label}.{i}.jpg", quality=90
                )
    settings = {"per_class": per_class, "size": size, "seed": seed}
    (root / MARKER).write_text(json.dumps(settings))
    return open_folder(root, "synthetic_cats_dogs")


def tf_datasets(
    folder: ImageFolder, image_size: int, batch_size: int, seed: int
) -> tuple[Any, Any]:
    """``image_dataset_from_directory`` + cache + rescale + prefetch.

    The cache holds the resized images as uint8 (67.5 KB a 150×150 RGB image; float32 would
    be 270 KB, 6.75 GB for the 25,000 Kaggle images instead of 1.7 GB); rescaling to [0, 1]
    runs after it, each epoch, which costs little beside decoding."""
    import keras
    import tensorflow as tf

    def load(split: str, shuffle: bool) -> Any:
        ds = keras.utils.image_dataset_from_directory(
            folder.root / split,
            labels="inferred",
            label_mode="binary",
            class_names=list(CLASSES),
            image_size=(image_size, image_size),
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            verbose=False,
        )
        # Resizing (bilinear) yields float32 in 0..255; rounded back to pixels for the cache.
        return (
            ds.map(
                lambda x, y: (tf.saturate_cast(tf.round(x), tf.uint8), y),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            .cache()
            .map(
                lambda x, y: (tf.cast(x, tf.float32) / 255.0, y),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            .prefetch(tf.data.AUTOTUNE)
        )

    return load("train", True), load("test", False)


def legacy_generators(
    folder: ImageFolder, image_size: int, batch_size: int, seed: int
) -> tuple[Any, Any]:
    """The seed's ``ImageDataGenerator(rescale=1/255).flow_from_directory`` pipeline."""
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    def flow(split: str, shuffle: bool) -> Any:
        return ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
            str(folder.root / split),
            target_size=(image_size, image_size),
            batch_size=batch_size,
            class_mode="binary",
            classes=list(CLASSES),
            shuffle=shuffle,
            seed=seed,
        )

    return flow("train", True), flow("test", False)
