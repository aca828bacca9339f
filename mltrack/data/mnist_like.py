"""Fashion-MNIST in its IDX gz files, and scikit-learn's bundled digits as an offline stand-in.

IDX (http://yann.lecun.com/exdb/mnist/): a big-endian header (magic ``0x0000080N`` with N
dimensions, then N uint32 sizes) followed by uint8 data. Fashion-MNIST ships four files:
``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``
and ``t10k-labels-idx1-ubyte.gz``.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from mltrack.data.core import ArrayDataset, DataUnavailable

FASHION_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def read_idx(path: Path) -> np.ndarray:
    """Read one gzipped IDX file of unsigned bytes, checking its header against its size."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise DataUnavailable(f"{path}: not a gzip file ({exc})") from exc
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DataUnavailable(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataUnavailable(
            f"{path}: header says {shape} ({expected} bytes), file has {len(raw) - header}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(data_dir: str = "") -> ArrayDataset:
    """From ``--data-dir`` (the four IDX gz files), else a download through keras.datasets."""
    if data_dir:
        folder = Path(data_dir)
        missing = [name for name in FASHION_FILES if not (folder / name).is_file()]
        if missing:
            raise DataUnavailable(
                f"--data-dir: {', '.join(missing)} not found in {folder}; download them from "
                f"{FASHION_URL} into that folder"
            )
        x_train, y_train, x_test, y_test = (
            read_idx(folder / n)
            for n in (FASHION_FILES[0], FASHION_FILES[1], FASHION_FILES[2], FASHION_FILES[3])
        )
        if len(x_train) != len(y_train) or len(x_test) != len(y_test):
            raise DataUnavailable(f"{folder}: image and label counts differ")
        source = str(folder)
    else:
        try:
            from keras import datasets

            (x_train, y_train), (x_test, y_test) = datasets.fashion_mnist.load_data()
        except Exception as exc:
            raise DataUnavailable(
                f"--dataset fashion_mnist: could not download it ({type(exc).__name__}); "
                f"fetch {', '.join(FASHION_FILES)} from {FASHION_URL} and pass --data-dir DIR, "
                "or use --dataset digits offline"
            ) from exc
        source = "keras.datasets"
    return ArrayDataset(
        "fashion_mnist",
        x_train,
        y_train.astype(np.int64),
        x_test,
        y_test.astype(np.int64),
        10,
        source,
    )


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> ArrayDataset:
    """scikit-learn's bundled 8×8 digits (1797 images, no download), shaped like MNIST.

    Each image is scaled to 0-255, enlarged 3× to 24×24 (nearest neighbour) and padded to
    28×28, so the MNIST-sized CNNs of the seeds see real spatial structure.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = (bunch.images * (255 / 16)).round().astype(np.uint8)
    images = np.kron(images, np.ones((1, 3, 3), np.uint8))
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        bunch.target.astype(np.int64),
        test_size=test_fraction,
        random_state=seed,
        stratify=bunch.target,
    )
    return ArrayDataset(
        "digits",
        x_train,
        y_train,
        x_test,
        y_test,
        10,
        f"sklearn.datasets.load_digits (split seed {seed})",
    )
