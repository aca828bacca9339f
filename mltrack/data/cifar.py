"""CIFAR-10/100 in the official "python version" format (pickled batches).

Layout: ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` and ``cifar-100-python/{train,test}``,
each a pickle of a dict with ``b"data"`` (N×3072 uint8, channel-major) and ``b"labels"`` (or
``b"fine_labels"``). ``--data-dir`` may hold the extracted folder or the original ``.tar.gz``.
"""

from __future__ import annotations

import functools
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from mltrack.data.core import ArrayDataset, DataUnavailable

URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
MEMBERS = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": (["train"], ["test"]),
}
LABEL_KEY = {"cifar10": b"labels", "cifar100": b"fine_labels"}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def _decode(handle: IO[bytes], name: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.load(handle, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except Exception as exc:
        raise DataUnavailable(f"{name}: not a CIFAR python batch ({exc})") from exc
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataUnavailable(f"{name}: expected N×3072 pixels and N labels, got {data.shape}")
    # Channel-major rows → NHWC images, as keras.datasets returns them.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read(open_member: Callable[[str], IO[bytes]], which: str) -> ArrayDataset:
    label_key = LABEL_KEY[which]
    parts = []
    for names in MEMBERS[which]:
        arrays = []
        for name in names:
            with open_member(name) as handle:
                arrays.append(_decode(handle, name, label_key))
        parts.append(
            (np.concatenate([a[0] for a in arrays]), np.concatenate([a[1] for a in arrays]))
        )
    (x_train, y_train), (x_test, y_test) = parts
    return ArrayDataset(which, x_train, y_train, x_test, y_test, NUM_CLASSES[which], "")


def _open_in(folder: Path, name: str) -> IO[bytes]:
    return (folder / name).open("rb")


def _missing(which: str, where: Path) -> DataUnavailable:
    return DataUnavailable(
        f"--data-dir: {which} not found in {where}; download {URLS[which]} and put it "
        f"(or its extracted {FOLDERS[which]}/ folder) there"
    )


def load_from_dir(which: str, data_dir: Path) -> ArrayDataset:
    """Read CIFAR from an extracted folder or the original archive under ``data_dir``."""
    folder = FOLDERS[which]
    for candidate in (data_dir / folder, data_dir):
        if all((candidate / n).is_file() for names in MEMBERS[which] for n in names):
            dataset = _read(functools.partial(_open_in, candidate), which)
            dataset.source = str(candidate)
            return dataset
    archive = data_dir / Path(URLS[which]).name
    if archive.is_file():
        with tarfile.open(archive, "r:gz") as tar:

            def member(name: str) -> IO[bytes]:
                handle = tar.extractfile(f"{folder}/{name}")
                if handle is None:
                    raise _missing(which, data_dir)
                return handle

            try:
                dataset = _read(member, which)
            except KeyError as exc:
                raise _missing(which, data_dir) from exc
        dataset.source = str(archive)
        return dataset
    raise _missing(which, data_dir)


def load(which: str, data_dir: str = "") -> ArrayDataset:
    """CIFAR from ``--data-dir``, else Keras' cache, else a download through ``keras.datasets``."""
    if data_dir:
        return load_from_dir(which, Path(data_dir))
    cache = Path.home() / ".keras" / "datasets"
    try:
        return load_from_dir(which, cache)
    except DataUnavailable:
        pass
    try:
        from keras import datasets

        module = datasets.cifar10 if which == "cifar10" else datasets.cifar100
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as exc:
        raise DataUnavailable(
            f"--dataset {which}: could not download it ({type(exc).__name__}); fetch "
            f"{URLS[which]} and pass --data-dir DIR (the archive or its {FOLDERS[which]}/ "
            "folder), or use --dataset synthetic offline"
        ) from exc
    return ArrayDataset(
        which,
        x_train,
        y_train.reshape(-1),
        x_test,
        y_test.reshape(-1),
        NUM_CLASSES[which],
        "keras.datasets",
    )
