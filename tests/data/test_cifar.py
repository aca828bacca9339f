"""The real CIFAR loading code on small files written in the real pickle format."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mltrack.studies.data import DataUnavailable, cifar


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
    with pytest.raises(
        DataUnavailable, match=r"^/.*/cifar-10-batches-py/test_batch: not a cifar10 python batch"
    ):
        cifar.load("cifar10", str(tmp_path))


def archive_of(src: Path, archive: Path, skip: str = "") -> bytes:
    """The official archive's layout (cifar-10-batches-py/ inside a .tar.gz), optionally
    without one member; returns its bytes."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted((src / "cifar-10-batches-py").iterdir()):
            if path.name != skip:
                tar.add(path, arcname=f"cifar-10-batches-py/{path.name}")
    return archive.read_bytes()


def truncated_archive(root: Path) -> str:
    write_cifar10(root / "src")
    archive = root / "data" / "cifar-10-python.tar.gz"
    full = archive_of(root / "src", archive)
    archive.write_bytes(full[: len(full) // 2])  # a download cut halfway
    return f"{archive}: truncated (the gzip stream ends early)"


def html_archive(root: Path) -> str:
    archive = root / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"<!DOCTYPE html><title>503 Service Unavailable</title>")
    return f"{archive}: not gzip-compressed"


def archive_without_a_batch(root: Path) -> str:
    write_cifar10(root / "src")
    archive = root / "data" / "cifar-10-python.tar.gz"
    archive_of(root / "src", archive, skip="data_batch_3")
    return f"{archive}: no cifar-10-batches-py/data_batch_3 inside"


def folder_without_a_batch(root: Path) -> str:
    write_cifar10(root / "data")
    (root / "data" / "cifar-10-batches-py" / "data_batch_5").unlink()
    return f"{root}/data/cifar-10-batches-py/data_batch_5 not found (cifar10 needs data_batch_1"


def label_out_of_range(root: Path) -> str:
    write_cifar10(root / "data")
    batch = root / "data" / "cifar-10-batches-py" / "data_batch_2"
    content = pickle.loads(batch.read_bytes(), encoding="bytes")
    content[b"labels"][3] = 42
    batch.write_bytes(pickle.dumps(content))
    return f"{batch}: label 42 (image 3; 1 such) outside the 10 classes of cifar10, 0..9"


def cut_pickle(root: Path) -> str:
    write_cifar10(root / "data")
    batch = root / "data" / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:1000])
    return f"{batch}: not a cifar10 python batch (UnpicklingError"


def wrong_shape(root: Path) -> str:
    write_cifar10(root / "data")
    batch = root / "data" / "cifar-10-batches-py" / "data_batch_1"
    content = pickle.loads(batch.read_bytes(), encoding="bytes")
    content[b"data"] = content[b"data"][:, :1024]  # one channel only
    batch.write_bytes(pickle.dumps(content))
    return f"{batch}: expected N×3072 uint8 pixels, got (4, 1024) uint8"


@pytest.mark.parametrize(
    "build",
    [
        truncated_archive,
        html_archive,
        archive_without_a_batch,
        folder_without_a_batch,
        label_out_of_range,
        cut_pickle,
        wrong_shape,
    ],
)
@pytest.mark.tf  # the experiment's main in this process (tests/experiments run it as a process)
def test_a_broken_cifar10_file_is_one_line_naming_it_exit_2_no_run(run_main, tmp_path, build):
    """Issue 19, item 4: a half-length archive was a 50-line EOFError traceback (exit 1); a
    folder without data_batch_5 said "cifar10 not found"; label 42 loaded silently."""
    expected = build(tmp_path)
    code, stderr = run_main(
        "experiments.cifar_amp", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data")
    )
    assert code == 2, stderr[-3000:]
    [line] = stderr.splitlines()
    assert line.startswith("python -m experiments.cifar_amp: error: ") and expected in line, line
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_a_cifar100_label_outside_its_100_classes_is_refused(run_module, tmp_path):
    folder = tmp_path / "data" / "cifar-100-python"
    folder.mkdir(parents=True)
    write_batch(folder / "train", 5, 1, b"fine_labels")
    write_batch(folder / "test", 2, 2, b"fine_labels")
    content = pickle.loads((folder / "test").read_bytes(), encoding="bytes")
    content[b"fine_labels"][1] = 100
    (folder / "test").write_bytes(pickle.dumps(content))
    result = run_module(
        "experiments.cifar_torch", "--dataset", "cifar100", "--data-dir", str(tmp_path / "data")
    )
    assert result.returncode == 2, result.stderr[-3000:]
    [line] = result.stderr.splitlines()
    assert f"{folder}/test: label 100 (image 1; 1 such) outside the 100 classes" in line
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_an_archive_whose_gzip_checksum_fails_is_damaged(tmp_path):
    """Bytes changed in transit: tar may stop early without a word; gzip's checksum says."""
    write_cifar10(tmp_path / "src")
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    full = archive_of(tmp_path / "src", archive)
    archive.write_bytes(full[:-8] + bytes(b ^ 0xFF for b in full[-8:-4]) + full[-4:])  # CRC32
    with pytest.raises(
        DataUnavailable, match=r"cifar-10-python\.tar\.gz: damaged \(BadGzipFile: CRC"
    ):
        cifar.load("cifar10", str(tmp_path / "data"))
