"""Fashion-MNIST's IDX gz reader on small files in the real format, and the digits stand-in."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from mltrack.data import DataUnavailable, mnist_like


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_fashion(folder: Path, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


def test_reads_the_four_idx_files(tmp_path):
    arrays = write_fashion(tmp_path)
    ds = mnist_like.load_fashion_mnist(str(tmp_path))
    assert ds.x_train.shape == (6, 28, 28) and ds.x_test.shape == (4, 28, 28)
    assert np.array_equal(ds.x_train, arrays["train-images-idx3-ubyte.gz"])
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte.gz"].tolist()


def test_missing_files_are_named(tmp_path):
    write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        DataUnavailable, match=r"t10k-labels-idx1-ubyte\.gz not found in .*download"
    ):
        mnist_like.load_fashion_mnist(str(tmp_path))


def test_bad_magic_and_truncated_files_are_clear_errors(tmp_path):
    write_fashion(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x09\x03" + b"\x00" * 20))
    with pytest.raises(DataUnavailable, match="bad magic number"):
        mnist_like.load_fashion_mnist(str(tmp_path))
    bad.write_bytes(gzip.compress(struct.pack(">BBBB3I", 0, 0, 8, 3, 6, 28, 28) + b"\x00" * 10))
    with pytest.raises(DataUnavailable, match=r"header says \(6, 28, 28\)"):
        mnist_like.load_fashion_mnist(str(tmp_path))
    bad.write_bytes(b"plain bytes")
    with pytest.raises(DataUnavailable, match="not a gzip file"):
        mnist_like.load_fashion_mnist(str(tmp_path))


def test_digits_offline_shaped_like_mnist():
    ds = mnist_like.load_digits(seed=0)
    assert ds.x_train.shape[1:] == (28, 28) and ds.x_train.dtype == np.uint8
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert ds.x_train.max() == 255 and set(np.unique(ds.y_train)) == set(range(10))
    # The 8×8 digit sits enlarged in the middle; the 2-pixel border is empty.
    assert ds.x_train[:, :2].max() == 0 and ds.x_train[:, -2:].max() == 0
