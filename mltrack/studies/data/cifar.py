"""CIFAR-10/100 in the official "python version" format (pickled batches).

Layout: ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` and ``cifar-100-python/{train,test}``,
each a pickle of a dict with ``b"data"`` (N×3072 uint8, channel-major) and ``b"labels"`` (or
``b"fine_labels"``). ``--data-dir`` may hold the extracted folder or the original ``.tar.gz``.

Every fault of these files is one line naming the file and what is wrong (``DataCorrupt``): an
archive cut short, not gzip or not tar, or whose gzip checksum fails; a batch missing from the
folder or the archive; a batch that is not a pickled dict of N×3072 pixels and N labels, or a
label outside the dataset's classes.
"""

from __future__ import annotations

import pickle
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mltrack.studies.data.core import ArrayDataset, DataCorrupt, DataUnavailable, one_line

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

Batch = tuple[np.ndarray, np.ndarray]


def _names(which: str) -> list[str]:
    train, test = MEMBERS[which]
    return [*train, *test]


def _decode(raw: bytes, where: str, which: str) -> Batch:
    """One batch's pixels (NHWC uint8) and labels; ``where`` names the file in errors."""
    label_key, classes = LABEL_KEY[which], NUM_CLASSES[which]
    try:
        batch = pickle.loads(raw, encoding="bytes")
    except Exception as exc:  # cut short or another file: EOFError, UnpicklingError, ...
        raise DataCorrupt(f"{where}: not a {which} python batch ({one_line(exc)})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        got = list(batch)[:4] if isinstance(batch, dict) else type(batch).__name__
        raise DataCorrupt(
            f"{where}: not a {which} python batch (expected a dict with b'data' and "
            f"{label_key!r}, got {got})"
        )
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataCorrupt(f"{where}: expected N×3072 uint8 pixels, got {data.shape} {data.dtype}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataCorrupt(
            f"{where}: expected {len(data)} integer labels (one per image), got {labels.shape}"
        )
    outside = np.flatnonzero((labels < 0) | (labels >= classes))
    if len(outside):
        i = int(outside[0])
        raise DataCorrupt(
            f"{where}: label {labels[i]} (image {i}; {len(outside)} such) outside the "
            f"{classes} classes of {which}, 0..{classes - 1}"
        )
    # Channel-major rows → NHWC images, as keras.datasets returns them.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def _dataset(which: str, batches: dict[str, Batch], source: str) -> ArrayDataset:
    (x_train, y_train), (x_test, y_test) = (
        (
            np.concatenate([batches[n][0] for n in names]),
            np.concatenate([batches[n][1] for n in names]),
        )
        for names in MEMBERS[which]
    )
    return ArrayDataset(which, x_train, y_train, x_test, y_test, NUM_CLASSES[which], source)


def _read_folder(which: str, folder: Path) -> ArrayDataset:
    batches = {}
    for name in _names(which):
        path = folder / name
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataCorrupt(f"{path}: cannot be read ({exc.strerror or one_line(exc)})") from exc
        batches[name] = _decode(raw, str(path), which)
    return _dataset(which, batches, str(folder))


def _members(archive: Path, prefix: str, wanted: list[str]) -> Iterator[tuple[str, bytes]]:
    """The wanted members' bytes in one pass over the archive (gzip cannot seek back cheaply);
    then the rest of the stream, so that gzip's own end and checksum are checked too."""
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar:
            name = info.name.removeprefix(f"{prefix}/")
            if info.isfile() and info.name == f"{prefix}/{name}" and name in wanted:
                handle = tar.extractfile(info)
                if handle is not None:
                    yield name, handle.read()
        while tar.fileobj is not None and tar.fileobj.read(1 << 20):
            pass


def _read_archive(which: str, archive: Path) -> ArrayDataset:
    folder, wanted = FOLDERS[which], _names(which)
    again = f"download {URLS[which]} again"
    batches: dict[str, Batch] = {}
    try:
        for name, raw in _members(archive, folder, wanted):
            batches[name] = _decode(raw, f"{archive} (member {folder}/{name})", which)
    except EOFError as exc:  # what gzip raises when the stream stops early
        raise DataCorrupt(f"{archive}: truncated (the gzip stream ends early); {again}") from exc
    except tarfile.ReadError as exc:
        what = {"empty file": "empty", "not a gzip file": "not gzip-compressed"}.get(
            str(exc), f"not a tar archive inside the gzip ({exc})"
        )
        raise DataCorrupt(f"{archive}: {what}; {again}") from exc
    except (OSError, zlib.error, tarfile.TarError) as exc:  # gzip.BadGzipFile: bad checksum
        raise DataCorrupt(f"{archive}: damaged ({one_line(exc)}); {again}") from exc
    missing = [f"{folder}/{name}" for name in wanted if name not in batches]
    if missing:
        raise DataCorrupt(f"{archive}: no {', '.join(missing)} inside; {again}")
    return _dataset(which, batches, str(archive))


def _missing(which: str, where: Path) -> DataUnavailable:
    return DataUnavailable(
        f"--data-dir: {which} not found in {where}; download {URLS[which]} and put it "
        f"(or its extracted {FOLDERS[which]}/ folder) there"
    )


def load_from_dir(which: str, data_dir: Path) -> ArrayDataset:
    """Read CIFAR from an extracted folder or the original archive under ``data_dir``."""
    names = _names(which)
    candidates = (data_dir / FOLDERS[which], data_dir)
    for candidate in candidates:
        if all((candidate / n).is_file() for n in names):
            return _read_folder(which, candidate)
    archive = data_dir / Path(URLS[which]).name
    if archive.is_file():
        return _read_archive(which, archive)
    for candidate in candidates:  # a folder holding some of the batches: name the others
        missing = [n for n in names if not (candidate / n).is_file()]
        if len(missing) < len(names):
            raise DataCorrupt(
                f"--data-dir: {', '.join(str(candidate / n) for n in missing)} not found "
                f"({which} needs {', '.join(names)}); extract {URLS[which]} there again"
            )
    raise _missing(which, data_dir)


def load(which: str, data_dir: str = "") -> ArrayDataset:
    """CIFAR from ``--data-dir``, else Keras' cache, else a download through ``keras.datasets``."""
    if data_dir:
        return load_from_dir(which, Path(data_dir))
    cache = Path.home() / ".keras" / "datasets"
    damaged: DataCorrupt | None = None
    try:
        return load_from_dir(which, cache)
    except DataCorrupt as exc:  # Keras' download may replace it; if not, this names it
        damaged = exc
    except DataUnavailable:
        pass
    try:
        from keras import datasets

        module = datasets.cifar10 if which == "cifar10" else datasets.cifar100
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as exc:
        if damaged is not None:
            raise damaged from exc
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
