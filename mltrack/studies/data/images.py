"""Image folders for binary classification (seed 001, cats vs dogs).

The layout the seed's Kaggle archive unpacks to, and what ``image_dataset_from_directory`` and
``flow_from_directory`` both read: ``ROOT/train/{cats,dogs}/*.jpg`` and
``ROOT/test/{cats,dogs}/*.jpg``. Class labels follow the sorted folder names (cats 0, dogs 1).

Every file the chosen loader would list is checked before training (``imagecheck``); the ones
it could not read (empty, truncated, not an image, a format it skips or cannot decode) are
skipped, counted and named, or refused with ``strict``. The loader then reads a folder of
links to the readable files alone, so the sample count every throughput divides by is the
count it yields.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mltrack.studies.data.core import DataUnavailable
from mltrack.studies.data.imagecheck import LOADERS, looks_like_image, problem

SPLITS = ("train", "test")
CLASSES = ("cats", "dogs")
SEED_ARCHIVE = "https://storage.googleapis.com/data-lake-bucket-new/cat-vs-dogs-kaggle.zip"
# Written last by write_synthetic: a folder without it was not (completely) written there.
MARKER = "synthetic.json"
SUMMARY_NAMES = 5  # skipped files named in the printed line; the artifact lists them all
SKIPPED_ARTIFACT = "dataset/skipped_files.tsv"  # every skipped file and why, in each run


@dataclass(frozen=True)
class Skipped:
    path: str  # relative to the folder: "train/cats/666.jpg"
    reason: str  # "empty", "truncated", "not an image", ...


@dataclass
class ImageFolder:
    name: str
    root: Path  # the folder as given
    files: dict[str, list[str]]  # "train/cats" -> what the loader reads, relative to root
    loader: str = "legacy"
    skipped: list[Skipped] = field(default_factory=list)
    digest: str = ""  # of the files read, their names and sizes when checked
    _view: Path | None = field(default=None, repr=False)

    @property
    def counts(self) -> dict[str, int]:
        return {key: len(names) for key, names in self.files.items()}

    @property
    def train_size(self) -> int:
        return sum(n for key, n in self.counts.items() if key.startswith("train/"))

    @property
    def test_size(self) -> int:
        return sum(n for key, n in self.counts.items() if key.startswith("test/"))

    def params(self) -> dict[str, object]:
        return {
            "dataset.name": self.name,
            "dataset.train_size": self.train_size,
            "dataset.test_size": self.test_size,
            "dataset.num_classes": len(CLASSES),
            "dataset.hash": self.digest,
            "dataset.source": str(self.root),
            "dataset.skipped_files": len(self.skipped),
        }

    def summary(self) -> str:
        """One line naming the skipped files (the first few), or "" if none was."""
        if not self.skipped:
            return ""
        named = ", ".join(f"{s.path} ({s.reason})" for s in self.skipped[:SUMMARY_NAMES])
        more = len(self.skipped) - SUMMARY_NAMES
        rest = f" and {more} more (all in the artifact {SKIPPED_ARTIFACT})" if more > 0 else ""
        return (
            f"{self.root}: skipped {len(self.skipped)} image files --loader {self.loader} "
            f"cannot read: {named}{rest}"
        )

    def skipped_listing(self) -> str:
        """Every skipped file and why, one a line (the run's artifact)."""
        return "".join(f"{s.path}\t{s.reason}\n" for s in self.skipped)

    def directory(self) -> Path:
        """Where the loader reads: the folder itself, or, when files were skipped, a temporary
        folder of links to the readable ones (removed when the process ends)."""
        if not self.skipped:
            return self.root
        if self._view is None:
            self._view = Path(tempfile.mkdtemp(prefix="mltrack-images-"))
            atexit.register(shutil.rmtree, self._view, True)
            for names in self.files.values():
                for relative in names:
                    link = self._view / relative
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to((self.root / relative).absolute())
        return self._view

    def mlflow_inputs(self) -> list[tuple[str, Any]]:
        """The train and test folders as MLflow datasets (source: the folder)."""
        from mltrack.studies.data.core import DatasetInfo

        return [
            (
                context,
                DatasetInfo(
                    f"{self.name}-{split}", f"{self.digest}-{split}", str(self.root / split)
                ),
            )
            for context, split in (("training", "train"), ("evaluation", "test"))
        ]


def open_folder(
    root: Path, name: str = "cats_vs_dogs", loader: str = "legacy", strict: bool = False
) -> ImageFolder:
    """Check the layout and every image file ``loader`` would list; a clear error names the
    first missing folder, a class left without a readable image, or (``strict``) the first
    file the loader could not read."""
    if loader not in LOADERS:
        raise ValueError(f"loader {loader!r}: expected one of {', '.join(LOADERS)}")
    files: dict[str, list[str]] = {}
    skipped: list[Skipped] = []
    digest = hashlib.sha1()  # the files read, in order: names and sizes
    for split in SPLITS:
        for label in CLASSES:
            folder = root / split / label
            if not folder.is_dir():
                raise DataUnavailable(
                    f"--data-dir: {folder} not found; expected "
                    f"{root}/{{train,test}}/{{cats,dogs}}/ (unzip {SEED_ARCHIVE} there), "
                    "or use --dataset synthetic offline"
                )
            readable, unreadable = [], 0
            # Recursive, links to folders not followed: as both loaders list a class folder.
            for where, _, names in sorted(os.walk(folder)):
                for filename in sorted(names):
                    if not looks_like_image(filename):
                        continue
                    path = Path(where) / filename
                    relative = path.relative_to(root).as_posix()
                    reason = problem(path, loader)
                    if reason:
                        skipped.append(Skipped(relative, reason))
                        unreadable += 1
                    else:
                        readable.append(relative)
                        digest.update(f"{relative}:{path.stat().st_size}".encode())
            if not readable:
                raise DataUnavailable(
                    f"--data-dir: {folder} holds no image --loader {loader} can read"
                    + (f" ({unreadable} image files it cannot)" if unreadable else "")
                )
            files[f"{split}/{label}"] = readable
    if strict and skipped:
        first, more = skipped[0], len(skipped) - 1
        raise DataUnavailable(
            f"--data-dir: {root / first.path}: {first.reason}"
            + (f" (and {more} more image files --loader {loader} cannot read)" if more else "")
            + "; --strict-data refuses them (without it they are skipped and named)"
        )
    return ImageFolder(name, root, files, loader, skipped, digest.hexdigest()[:12])


def synthetic_folder(
    root: Path,
    per_class: int,
    size: int = 150,
    seed: int = 0,
    *,
    ours: bool = False,
    loader: str = "legacy",
    strict: bool = False,
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
        return open_folder(root, "synthetic_cats_dogs", loader, strict)
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
        write_synthetic(root, per_class, size, seed)
    except OSError as exc:
        raise DataUnavailable(
            f"--data-dir: cannot write the synthetic images into {root} ({exc.strerror or exc})"
        ) from exc
    return open_folder(root, "synthetic_cats_dogs", loader, strict)


def write_synthetic(
    root: Path, per_class: int, size: int = 150, seed: int = 0, loader: str = "legacy"
) -> ImageFolder:
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
    return open_folder(root, "synthetic_cats_dogs", loader)


def tf_datasets(
    folder: ImageFolder, image_size: int, batch_size: int, seed: int
) -> tuple[Any, Any]:
    """``image_dataset_from_directory`` + cache + rescale + prefetch.

    The cache holds the resized images as uint8 (67.5 KB a 150×150 RGB image; float32 would
    be 270 KB, 6.75 GB for the 25,000 Kaggle images instead of 1.7 GB); rescaling to [0, 1]
    runs after it, each epoch, which costs little beside decoding."""
    import keras
    import tensorflow as tf

    _check_loader(folder, "tf_data")

    def load(split: str, shuffle: bool) -> Any:
        ds = keras.utils.image_dataset_from_directory(
            folder.directory() / split,
            labels="inferred",
            label_mode="binary",
            class_names=list(CLASSES),
            image_size=(image_size, image_size),
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            verbose=False,
        )
        _check_count(folder, split, len(ds.file_paths))
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

    _check_loader(folder, "legacy")

    def flow(split: str, shuffle: bool) -> Any:
        iterator = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
            str(folder.directory() / split),
            target_size=(image_size, image_size),
            batch_size=batch_size,
            class_mode="binary",
            classes=list(CLASSES),
            shuffle=shuffle,
            seed=seed,
        )
        _check_count(folder, split, iterator.samples)
        return iterator

    return flow("train", True), flow("test", False)


def first_pixels(dataset: Any) -> np.ndarray:
    """The first batch of a loader's images as pixel values 0-255 (NHWC, float32): both
    loaders scale by 1/255, an exported model takes the raw values."""
    tf_data = hasattr(dataset, "take")  # else a Keras PyDataset (the legacy generator)
    batch = next(iter(dataset.take(1)))[0] if tf_data else dataset[0][0]
    return np.asarray(batch, dtype=np.float32) * 255


def _check_loader(folder: ImageFolder, loader: str) -> None:
    if folder.loader != loader:
        raise ValueError(
            f"{folder.root} was checked for --loader {folder.loader}; open it with "
            f"open_folder(..., loader={loader!r}) for this loader"
        )


def _check_count(folder: ImageFolder, split: str, listed: int) -> None:
    """What the loader yields is what every throughput divides by: the two must agree."""
    kept = folder.train_size if split == "train" else folder.test_size
    if listed != kept:
        raise RuntimeError(
            f"--loader {folder.loader} lists {listed} {split} images in "
            f"{folder.directory() / split}, the check kept {kept}"
        )
