"""Fashion-MNIST in its IDX files, and scikit-learn's bundled digits as an offline stand-in.

IDX (http://yann.lecun.com/exdb/mnist/): a big-endian header (magic ``0x0000080N`` with N
dimensions, then N uint32 sizes) followed by uint8 data. Fashion-MNIST ships four files:
``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``
and ``t10k-labels-idx1-ubyte.gz``; each may also be on disk uncompressed (without ``.gz``, or
with it when a browser decompressed the download and kept the name). Every fault is one line
naming the file: cut short, a damaged gzip stream, a wrong magic number, data of another size
than the header says, images not 28×28, a label outside the 10 classes, counts that differ.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from mltrack.studies.data.core import ArrayDataset, DataCorrupt, DataUnavailable, one_line

FASHION_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes with ``ndim`` dimensions, gzip-compressed or not
    (told by its first bytes, not its name), checking its header against its size."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataCorrupt(f"{path}: cannot be read ({exc.strerror or one_line(exc)})") from exc
    if raw.startswith(GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except EOFError as exc:
            raise DataCorrupt(f"{path}: truncated (the gzip stream ends early)") from exc
        except (OSError, zlib.error) as exc:
            raise DataCorrupt(f"{path}: damaged gzip ({one_line(exc)})") from exc
    if not raw:
        raise DataCorrupt(f"{path}: empty")
    magic = 0x800 + ndim
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        raise DataCorrupt(
            f"{path}: bad magic number 0x{raw[:4].hex()}, expected 0x{magic:08x} (IDX of "
            f"unsigned bytes in {ndim} dimensions, gzip-compressed or not)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataCorrupt(f"{path}: truncated inside its IDX header ({len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataCorrupt(
            f"{path}: header says {shape} ({expected} bytes), file has {len(raw) - header}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find(folder: Path, name: str) -> Path | None:
    """``name`` (``*.gz``) or its uncompressed form, whichever is there (the first)."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_fashion_mnist(folder: Path) -> ArrayDataset:
    """The four IDX files in ``folder``, checked: 28×28 images, one label per image, each label
    one of the 10 classes."""
    found = {name: _find(folder, name) for name in FASHION_FILES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DataUnavailable(
            f"--data-dir: {', '.join(missing)} not found in {folder} (nor uncompressed); "
            f"download them from {FASHION_URL} into that folder"
        )
    paths = [path for path in found.values() if path is not None]
    arrays = []
    for images_path, labels_path in (paths[:2], paths[2:]):
        images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
        if images.shape[1:] != IMAGE_SHAPE:
            raise DataCorrupt(f"{images_path}: images of {images.shape[1:]}, expected 28×28")
        if len(images) != len(labels):
            raise DataCorrupt(
                f"{images_path} holds {len(images)} images, {labels_path} {len(labels)} labels; "
                "expected one label per image"
            )
        outside = np.flatnonzero(labels >= NUM_CLASSES)
        if len(outside):
            i = int(outside[0])
            raise DataCorrupt(
                f"{labels_path}: label {labels[i]} (item {i}; {len(outside)} such) outside the "
                f"{NUM_CLASSES} classes, 0..{NUM_CLASSES - 1}"
            )
        arrays += [images, labels.astype(np.int64)]
    x_train, y_train, x_test, y_test = arrays
    return ArrayDataset("fashion_mnist", x_train, y_train, x_test, y_test, 10, str(folder))


def load_fashion_mnist(data_dir: str = "") -> ArrayDataset:
    """From ``--data-dir`` (the four IDX files), else a download through keras.datasets."""
    if data_dir:
        return read_fashion_mnist(Path(data_dir))
    try:
        from keras import datasets

        (x_train, y_train), (x_test, y_test) = datasets.fashion_mnist.load_data()
    except Exception as exc:
        cache = Path.home() / ".keras" / "datasets" / "fashion-mnist"
        try:  # Keras reuses what it downloaded before: a damaged file there is named
            if cache.is_dir():
                read_fashion_mnist(cache)
        except DataCorrupt as damaged:
            raise damaged from exc
        except DataUnavailable:
            pass
        raise DataUnavailable(
            f"--dataset fashion_mnist: could not download it ({type(exc).__name__}); "
            f"fetch {', '.join(FASHION_FILES)} from {FASHION_URL} and pass --data-dir DIR, "
            "or use --dataset digits offline"
        ) from exc
    return ArrayDataset(
        "fashion_mnist",
        x_train,
        y_train.astype(np.int64),
        x_test,
        y_test.astype(np.int64),
        10,
        "keras.datasets",
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
