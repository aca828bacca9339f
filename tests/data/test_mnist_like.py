"""Fashion-MNIST's IDX gz reader on small files in the real format, and the digits stand-in."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from mltrack.studies.data import DataUnavailable, mnist_like


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_fashion(folder: Path, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
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
    with pytest.raises(DataUnavailable, match=r"bad magic number 0x706c6169, expected 0x00000803"):
        mnist_like.load_fashion_mnist(str(tmp_path))


def test_uncompressed_idx_files_load_as_the_gz_ones_do(tmp_path):
    """Issue 19, item 4: `train-images-idx3-ubyte` without .gz (a common download form) was
    "not found"; a browser may also decompress a download and keep the .gz name."""
    arrays = write_fashion(tmp_path / "gz")
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in arrays:
        raw = gzip.decompress((tmp_path / "gz" / name).read_bytes())
        # two without .gz, one decompressed under its .gz name, one compressed
        if name.startswith("train"):
            (plain / name.removesuffix(".gz")).write_bytes(raw)
        elif "images" in name:
            (plain / name).write_bytes(raw)
        else:
            (plain / name).write_bytes(gzip.compress(raw))
    ds = mnist_like.load_fashion_mnist(str(plain))
    assert np.array_equal(ds.x_train, arrays["train-images-idx3-ubyte.gz"])
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte.gz"].tolist()
    assert (
        ds.params()["dataset.hash"]
        == (mnist_like.load_fashion_mnist(str(tmp_path / "gz")).params()["dataset.hash"])
    )


def gz(folder: Path, name: str) -> Path:
    return folder / f"{name}-idx{3 if 'images' in name else 1}-ubyte.gz"


def truncated_gzip(folder: Path) -> str:
    path = gz(folder, "train-images")
    path.write_bytes(path.read_bytes()[:-30])
    return f"{path}: truncated (the gzip stream ends early)"


def damaged_gzip(folder: Path) -> str:
    path = gz(folder, "t10k-labels")
    data = path.read_bytes()
    path.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:])  # CRC32
    return f"{path}: damaged gzip (BadGzipFile: CRC check failed"


def wrong_magic(folder: Path) -> str:
    path = gz(folder, "train-labels")  # an images file where the labels belong
    path.write_bytes(gz(folder, "t10k-images").read_bytes())
    return f"{path}: bad magic number 0x00000803, expected 0x00000801"


def wrong_size(folder: Path) -> str:
    path = gz(folder, "t10k-images")
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-28]))  # one row short: the header still says 4
    return f"{path}: header says (4, 28, 28) (3136 bytes), file has 3108"


def label_out_of_range(folder: Path) -> str:
    path = gz(folder, "train-labels")
    write_idx(path, np.array([1, 2, 3, 42, 4, 5]))
    return f"{path}: label 42 (item 3; 1 such) outside the 10 classes, 0..9"


def counts_differ(folder: Path) -> str:
    write_idx(gz(folder, "t10k-labels"), np.array([1, 2, 3]))
    return f"{gz(folder, 't10k-images')} holds 4 images, {gz(folder, 't10k-labels')} 3 labels"


def not_28x28(folder: Path) -> str:
    write_idx(gz(folder, "train-images"), np.zeros((6, 32, 32)))
    return f"{gz(folder, 'train-images')}: images of (32, 32), expected 28×28"


def empty(folder: Path) -> str:
    path = folder / "t10k-images-idx3-ubyte"  # uncompressed, in place of the .gz
    gz(folder, "t10k-images").unlink()
    path.write_bytes(b"")
    return f"{path}: empty"


@pytest.mark.parametrize(
    "damage",
    [
        truncated_gzip,
        damaged_gzip,
        wrong_magic,
        wrong_size,
        label_out_of_range,
        counts_differ,
        not_28x28,
        empty,
    ],
)
@pytest.mark.tf  # the experiment's main in this process (tests/experiments run it as a process)
def test_a_broken_idx_file_is_one_line_naming_it_exit_2_no_run(run_main, tmp_path, damage):
    write_fashion(tmp_path / "data")
    expected = damage(tmp_path / "data")
    code, stderr = run_main(
        "experiments.fashion_mnist_precision",
        *("--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "data")),
    )
    assert code == 2, stderr[-3000:]
    [line] = stderr.splitlines()
    assert line.startswith("python -m experiments.fashion_mnist_precision: error: "), line
    assert expected in line, line
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_digits_offline_shaped_like_mnist():
    ds = mnist_like.load_digits(seed=0)
    assert ds.x_train.shape[1:] == (28, 28) and ds.x_train.dtype == np.uint8
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert ds.x_train.max() == 255 and set(np.unique(ds.y_train)) == set(range(10))
    # The 8×8 digit sits enlarged in the middle; the 2-pixel border is empty.
    assert ds.x_train[:, :2].max() == 0 and ds.x_train[:, -2:].max() == 0
