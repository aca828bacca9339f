"""The verifier's side of ``mltrack.export.artifacts``: a process of its own, where MLflow is
loaded.

``python -m mltrack.export.reload`` answers one JSON request per stdin line: ``save`` writes an
export's MLflow pyfunc model (signature, input example, pinned requirements); ``check``
records the model's size in its ``MLmodel`` and reloads it through every format and the MLflow
model on the probe, writing ``reloaded.<format>.npy`` for the training process to compare.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from mltrack.export import pyfunc_model
from mltrack.export.artifacts import _float32, _pinned, pixels_accepted


def _save(folder: Path, kind: str, packages: list[str]) -> None:
    """The verifier's side of ``save_mlflow_model``."""
    import mlflow
    from mlflow.models import ModelSignature, infer_signature

    path = folder / "model"
    probe = np.load(folder / "check" / "example.npy")
    signature = infer_signature(probe, np.load(folder / "check" / "outputs.npy"))
    metadata = None
    accepts = pixels_accepted(kind, probe)
    if accepts:
        # MLflow enforces a tensor input's dtype exactly (uint8 is not float32), and images come
        # as either: the input is described in the model's metadata instead (the model scales
        # the pixels itself), the output keeps its schema.
        signature = ModelSignature(outputs=signature.outputs)
        metadata = {"mltrack.input": accepts}
    mlflow.pyfunc.save_model(
        str(path),
        loader_module=Path(pyfunc_model.__file__).stem,
        code_paths=[pyfunc_model.__file__],
        signature=signature,
        input_example=probe,
        pip_requirements=_pinned("mlflow", "numpy", *packages),
        metadata=metadata,
    )
    (path / pyfunc_model.CONFIG_FILE).write_text(json.dumps({"format": kind}) + "\n")


def _pyfunc(model: Path, probe: np.ndarray) -> np.ndarray:
    import mlflow

    return np.asarray(mlflow.pyfunc.load_model(str(model), suppress_warnings=True).predict(probe))


def _reload_keras(model: Path, work: Path) -> dict[str, np.ndarray]:
    import keras

    probe = np.load(work / "probe.npy")
    net = keras.models.model_from_json((model / "model.json").read_text())
    net.load_weights(model / "model.weights.h5")
    outputs = {"keras": _float32(net.predict(probe, verbose=0)), "pyfunc": _pyfunc(model, probe)}
    keras.backend.clear_session()  # the next request starts from an empty graph
    return outputs


def _reload_torch(model: Path, work: Path) -> dict[str, np.ndarray]:
    import torch

    device = torch.device((work / "device.txt").read_text())
    probe = torch.load(work / "probe.pt").to(device)
    scripted = torch.jit.load(str(model / "model.torchscript.pt"), map_location=device)
    program = torch.export.load(str(model / "model.pt2")).module()
    with torch.no_grad():
        return {
            "torchscript": scripted(probe).float().cpu().numpy(),
            "export": program(probe).float().cpu().numpy(),
            "pyfunc": _pyfunc(model, probe.float().cpu().numpy()),
        }


RELOADERS = {"keras": _reload_keras, "torch": _reload_torch}


def _size(model: Path) -> None:
    """The MLmodel's size: the files the export added after MLflow saved it count too."""
    from mlflow.models import Model

    meta = Model.load(str(model / "MLmodel"))
    meta.model_size_bytes = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    meta.save(str(model / "MLmodel"))


def serve() -> int:
    """Answer reload requests until stdin closes; framework output never reaches the replies."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request.get("op") == "save":
                _save(Path(request["folder"]), request["kind"], request["packages"])
            else:
                work, model = Path(request["work"]), Path(request["model"])
                _size(model)
                outputs = RELOADERS[request["kind"]](model, work)
                for name, output in outputs.items():
                    np.save(work / f"reloaded.{name}.npy", output)
            reply: dict[str, str] = {}
        except Exception as exc:  # reported to the training process as reload_error
            reply = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(serve())
