"""The loader of mltrack's MLflow models: seed-format files served as an MLflow ``pyfunc``.

An exported run's ``model/`` folder is both the seed's formats (Keras JSON + HDF5 weights, or
TorchScript + a ``torch.export`` program) and an MLflow model over them: ``MLmodel`` names this
module as the pyfunc ``loader_module`` and ships this file in ``model/code/``, so

    mlflow.pyfunc.load_model("runs:/<run id>/model").predict(batch)

works in any process with the framework installed, and never imports mltrack. So this file
imports only the standard library, numpy and the framework, and is copied as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# What ``_load_pyfunc`` reads to know which files to load (written by ``mltrack.export.artifacts``).
CONFIG_FILE = "pyfunc.json"


class KerasModel:
    """``model.json`` (architecture) + ``model.weights.h5``; predictions as float32."""

    def __init__(self, folder: Path) -> None:
        import keras

        self.model = keras.models.model_from_json((folder / "model.json").read_text())
        self.model.load_weights(folder / "model.weights.h5")

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        outputs = self.model.predict(np.asarray(model_input), verbose=0)
        return np.asarray(outputs, dtype=np.float32)


class ExportedProgram:
    """``model.pt2`` (``torch.export``, dynamic batch): any batch size, on the saved device."""

    def __init__(self, folder: Path) -> None:
        import torch

        self.torch = torch
        self.module = torch.export.load(str(folder / "model.pt2")).module()
        parameter = next(iter(self.module.parameters()), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        self.dtype = parameter.dtype if parameter is not None else torch.float32

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        torch = self.torch
        batch = torch.as_tensor(np.asarray(model_input)).to(self.device, self.dtype)
        with torch.no_grad():
            return self.module(batch).float().cpu().numpy()


LOADERS = {"keras": KerasModel, "torch": ExportedProgram}


def _load_pyfunc(data_path: str) -> Any:
    """MLflow's entry point: ``data_path`` is the model folder itself (no ``data`` key)."""
    folder = Path(data_path)
    kind = json.loads((folder / CONFIG_FILE).read_text())["format"]
    return LOADERS[kind](folder)
