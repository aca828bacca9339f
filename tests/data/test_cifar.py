"""The real CIFAR loading code on small files written in the real pickle format."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mltrack.data import DataUnavailable, cifar


def write_batch(path: Path, n: int, seed: int, label_key: bytes = b"labels") -> tuple:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    with path.open("wb") as f:
        pickle.dump(
            {b"batch_label": b"x", b"data": data, label_key: labels, b"filenames": [b"f"] * n}, f
        )
    return data, labels


def write_cifar10(root: Path) -> tuple:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = [write_batch(folder / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    test = write_batch(folder / "test_batch", 3, 99)
    return train, test


def test_reads_extracted_folder_as_nhwc(tmp_path):
    train, test = write_cifar10(tmp_path)
    ds = cifar.load("cifar10", str(tmp_path))
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (3, 32, 32, 3)
    assert ds.y_test.tolist() == test[1]
    assert ds.y_train.tolist() == [label for _, labels in train for label in labels]
    # Pixel (row 0, col 1) of image 0: red at index 1, green at 1024+1, blue at 2048+1.
    first = train[0][0][0]
    assert ds.x_train[0, 0, 1].tolist() == [first[1], first[1025], first[2049]]
    assert ds.num_classes == 10 and ds.source.endswith("cifar-10-batches-py")
    assert ds.params()["dataset.train_size"] == 20


def test_reads_the_original_archive(tmp_path):
    write_cifar10(tmp_path / "src")
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = cifar.load("cifar10", str(archive.parent))
    assert ds.x_train.shape == (20, 32, 32, 3)
    assert (
        ds.params()["dataset.hash"]
        == cifar.load("cifar10", str(tmp_path / "src")).params()["dataset.hash"]
    )


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    write_batch(folder / "train", 5, 1, b"fine_labels")
    write_batch(folder / "test", 2, 2, b"fine_labels")
    ds = cifar.load("cifar100", str(tmp_path))
    assert ds.num_classes == 100 and len(ds.y_train) == 5


def test_missing_files_name_what_to_download(tmp_path):
    with pytest.raises(DataUnavailable, match=r"cifar-10-python\.tar\.gz.*cifar-10-batches-py/"):
        cifar.load("cifar10", str(tmp_path))


def test_malformed_batch_is_a_clear_error(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataUnavailable, match=r"^test_batch: not a CIFAR python batch"):
        cifar.load("cifar10", str(tmp_path))
