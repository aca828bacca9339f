"""The in-memory dataset every loader returns, and its content hash for params."""

from __future__ import annotations

import hashlib
import json
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


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as MLflow records a run's input: the fields of ``mlflow.data.Dataset.to_dict()``
    (name, digest, source type, source, and for arrays their tensor schema and profile), made
    without importing MLflow (the writer makes the MLflow entity). ``tests/test_data.py`` checks
    them against ``mlflow.data.from_numpy`` and ``MetaDataset``."""

    name: str
    digest: str
    source: str  # where it came from: a path, a URL, else a description
    arrays: tuple[np.ndarray, np.ndarray] | None = None  # features, targets

    def to_dict(self) -> dict[str, str]:
        source_type, source = _source(self.source)
        fields = {"name": self.name, "digest": self.digest, "source": source}
        fields["source_type"] = source_type
        if self.arrays is not None:
            features, targets = self.arrays
            spec = {name: json.dumps([_tensor_spec(a)]) for name, a in
                    (("features", features), ("targets", targets))}  # fmt: skip
            fields["schema"] = json.dumps({"mlflow_tensorspec": spec})
            fields["profile"] = json.dumps({
                f"{name}_{what}": value
                for name, array in (("features", features), ("targets", targets))
                for what, value in (("shape", list(array.shape)), ("size", int(array.size)),
                                    ("nbytes", int(array.nbytes)))
            })  # fmt: skip
        return fields


def _tensor_spec(array: np.ndarray) -> dict[str, Any]:
    return {"type": "tensor", "tensor-spec": {"dtype": str(array.dtype),
                                              "shape": [-1, *array.shape[1:]]}}  # fmt: skip


def _source(source: str) -> tuple[str, str]:
    """MLflow's source type and JSON for a path, a URL or a description (as
    ``resolve_dataset_source`` and ``CodeDatasetSource`` give them)."""
    if source.startswith(("http://", "https://")):
        return "http", json.dumps({"url": source})
    if "://" in source or Path(source).exists():
        return "local", json.dumps({"uri": source})
    return "code", json.dumps({"tags": {"origin": source}})


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
        return [
            (context, DatasetInfo(f"{self.name}-{split}", fingerprint(x, y), self.source, (x, y)))
            for context, split, x, y in (
                ("training", "train", self.x_train, self.y_train),
                ("evaluation", "test", self.x_test, self.y_test),
            )
        ]
