"""The in-memory dataset every loader returns, and its content hash for params."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from mltrack.errors import UsageError


class DataUnavailable(UsageError):
    """The dataset is not on disk and could not be fetched: say what to download and where."""


def fingerprint(*arrays: np.ndarray) -> str:
    """A short content hash, logged as the dataset version so two runs can be compared."""
    digest = hashlib.sha1()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]


@dataclass
class ArrayDataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str  # where it came from: a path, "keras.datasets", "generated (seed 0)"

    def params(self) -> dict[str, object]:
        return {
            "dataset.name": self.name,
            "dataset.train_size": len(self.x_train),
            "dataset.test_size": len(self.x_test),
            "dataset.num_classes": self.num_classes,
            "dataset.hash": fingerprint(self.x_train, self.y_train, self.x_test, self.y_test),
            "dataset.source": self.source,
        }
