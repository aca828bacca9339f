"""The in-memory dataset every loader returns, and its content hash for params."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mltrack.errors import UsageError


class DataUnavailable(UsageError):
    """The dataset is not on disk and could not be fetched: say what to download and where."""


class DataCorrupt(DataUnavailable):
    """A data file is there but unusable (cut short, another format, values out of range):
    the message names the file and what is wrong with it."""


def one_line(exc: BaseException) -> str:
    """An exception as a short clause of one line, for a message that names the file."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def fingerprint(*arrays: np.ndarray) -> str:
    """A short content hash, logged as the dataset version so two runs can be compared."""
    digest = hashlib.sha1()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]


def dataset_source(source: str) -> Any:
    """Where a dataset came from, as MLflow records it: a path or URL, else a description."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if "://" in source or Path(source).exists():
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": all local
            warnings.simplefilter("ignore")
            return resolve_dataset_source(source)
    return CodeDatasetSource({"origin": source})


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

    def mlflow_inputs(self) -> list[tuple[str, Any]]:
        """The training and evaluation splits as MLflow datasets (name, digest, source,
        schema, profile), each with its context; the digest is the split's content hash."""
        import mlflow.data

        source = dataset_source(self.source)
        return [
            (
                context,
                mlflow.data.from_numpy(
                    x,
                    targets=y,
                    source=source,
                    name=f"{self.name}-{split}",
                    digest=fingerprint(x, y),
                ),
            )
            for context, split, x, y in (
                ("training", "train", self.x_train, self.y_train),
                ("evaluation", "test", self.x_test, self.y_test),
            )
        ]
