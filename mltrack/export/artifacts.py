"""Model export and round-trip verification.

An export writes the seed's formats under the run's ``model/`` (Keras: architecture JSON + HDF5
weights; PyTorch: TorchScript + a ``torch.export`` program with a dynamic batch dimension) and
makes that folder an MLflow model too: an ``MLmodel`` whose pyfunc loader
(``mltrack/export/pyfunc_model.py``, shipped in ``model/code/``) reads those same files, with a
signature and an input example. So ``mlflow.pyfunc.load_model("runs:/ID/model")``,
``mlflow models serve`` and the model registry (``--register NAME``) work without mltrack, and
no weights are stored twice.

A saved model is only useful if it loads again and computes the same thing: each export is
reloaded **in another process** (nothing shared with training: no cached graphs, no custom
objects in memory), through every format and the MLflow model, on the same fixed probe batch;
the largest absolute difference is ``reload_max_abs_diff`` with a ``reload_ok`` tag. That
process, the ``Verifier``, starts at a process's first export and serves every later one (a
study's runs, a sweep worker's trials), so the framework starts once, not once per run. The
whole export is timed as ``export_wall_s``, a metric of its own, never part of training times.

``python -m mltrack.export.reload`` is the verifier's side: one JSON request per stdin line. It also
writes the MLflow model (``save_mlflow_model``): a training process never loads MLflow.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mltrack.measure.precision import COMPUTE_DTYPE

if TYPE_CHECKING:
    from mltrack.tracking.run import Run

# How close a reload must match: the same kernels on the same machine should agree bit for bit,
# but 16-bit types leave room for a different kernel choice in a new process.
TOLERANCE = {"float64": 1e-9, "float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}
RELOAD_TIMEOUT_S = 600
# Rows of the probe saved as the MLflow model's input example (images make large JSON).
EXAMPLE_ROWS = 1


def _float32(outputs: Any) -> np.ndarray:
    """Outputs as float32: numpy cannot save and load bfloat16 as a number type (it comes back
    as raw bytes), and every compute dtype but fp64 fits float32 exactly."""
    array = np.asarray(outputs)
    return array if array.dtype == np.float64 else array.astype(np.float32)


def max_abs_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    """Largest |difference| over finite entries; inf if shapes or NaN positions differ."""
    a, b = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(a[~finite], b[~finite], equal_nan=True):
        return float("inf")
    return float(np.max(np.abs(a[finite] - b[finite]), initial=0.0))


class Verifier:
    """A reloading process kept for the life of this one, started at the first export.

    Requests and replies are JSON lines on its stdin/stdout; its stderr (framework logs) goes
    to a file, whose last line names the error if the process dies.
    """

    def __init__(self, command: list[str] | None = None) -> None:
        self.command = command or [sys.executable, "-m", "mltrack.export.reload"]
        self.proc: subprocess.Popen[str] | None = None
        self.stderr: Any = None

    def check(self, kind: str, model: Path, work: Path) -> str:
        """Reload ``model`` and write ``reloaded.<format>.npy`` into ``work``; '' or an error."""
        return self.request({"op": "check", "kind": kind, "model": str(model), "work": str(work)})

    def request(self, request: dict[str, Any]) -> str:
        """Send one request (``serve`` says which), wait for its reply: '' or an error."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        ready: list[Any] = [self.proc.stdout]
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], RELOAD_TIMEOUT_S)
            line = self.proc.stdout.readline() if ready else ""
        except OSError:  # it died before reading the request
            line = ""
        if line:
            return str(json.loads(line).get("error", ""))
        # No reply: it died (its log's last line says why) or it hung (the log says nothing).
        error = self._last_error() if ready else ""
        self.close()
        return error or f"the verifier gave no answer within {RELOAD_TIMEOUT_S} s"

    def _start(self) -> None:
        self.close()
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )

    def _last_error(self) -> str:
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        lines = [line.strip() for line in self.stderr.read().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None


VERIFIER = Verifier()
atexit.register(VERIFIER.close)


def verify(run: Run, kind: str, model: Path, expected: np.ndarray, tolerance: float) -> bool:
    """Reload ``model`` in the verifier, compare every format on the probe, log the outcome.

    ``reload_ok`` holds only if every format loaded and matched.
    """
    work = model.parent / "check"
    error = VERIFIER.check(kind, model, work)
    outputs = sorted(work.glob("reloaded.*.npy"))
    diffs = {path.name.split(".")[1]: max_abs_diff(expected, np.load(path)) for path in outputs}
    if error or not diffs:
        run.set_tags({"reload_error": (error or "no output")[:500]})
        diffs["process"] = float("inf")
    worst = max(diffs.values())
    ok = worst <= tolerance
    metrics = {"reload_max_abs_diff": worst}
    if len(diffs) > 1:
        metrics.update({f"reload_max_abs_diff.{name}": d for name, d in diffs.items()})
    run.log_metrics(metrics, step=0)
    run.set_tags(
        {
            "reload_ok": str(ok).lower(),
            "reload_tolerance": tolerance,
            "reload_formats": ",".join(sorted(diffs)),
        }
    )
    return ok


@contextlib.contextmanager
def exporting(run: Run) -> Iterator[Path]:
    """A scratch folder for one export, timed as ``export_wall_s``."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mltrack-export-") as tmp:
        (Path(tmp) / "check").mkdir()
        yield Path(tmp)
    run.log_metrics({"export_wall_s": time.perf_counter() - start}, step=0)


def skipped(run: Run) -> bool:
    """A run that was stopped (diverged, pruned) has no model worth keeping; in a distributed
    job only rank 0 exports (every rank holds the same weights)."""
    if not run.is_rank_zero:
        return True
    if run.stopping:
        run.set_tags({"export": f"skipped: the run {run.outcome}"})
    return run.stopping


def _pinned(*packages: str) -> list[str]:
    """``name==version`` of what the model needs, as installed here (no local ``+cpu`` label)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in packages]


def pixels_accepted(kind: str, probe: np.ndarray) -> str:
    """What an image model's export takes ("" for other inputs): a batch of pixel values
    0-255, uint8 or float, NHWC for Keras and NCHW for PyTorch (the model normalises them)."""
    if probe.ndim != 4:
        return ""
    layout, shape = ("NCHW", probe.shape[1:]) if kind == "torch" else ("NHWC", probe.shape[1:])
    size = "x".join(str(n) for n in shape)
    return f"images {layout} (any batch) x {size}: uint8 or float pixel values 0-255"


def save_mlflow_model(
    run: Run, folder: Path, kind: str, probe: np.ndarray, outputs: np.ndarray, packages: list[str]
) -> Path | None:
    """An MLflow pyfunc model in ``folder/model`` (loaded by ``pyfunc_model``), to which the
    caller adds the format files it reads. The verifier process writes it: MLflow is never
    loaded in a training process. None if it could not, with the run's ``reload_ok`` false and
    the verifier's last words as ``reload_error``."""
    np.save(folder / "check" / "example.npy", probe[:EXAMPLE_ROWS])
    np.save(folder / "check" / "outputs.npy", outputs[:EXAMPLE_ROWS])
    error = VERIFIER.request(
        {"op": "save", "kind": kind, "folder": str(folder), "packages": packages}
    )
    if error:
        run.set_tags({"reload_ok": "false", "reload_error": error[:500]})
        return None
    return folder / "model"


def _finish(
    run: Run, kind: str, model: Path, expected: np.ndarray, precision: str, register: str
) -> bool:
    """Verify the model folder, log it as the run's logged model, register it if asked to."""
    ok = verify(run, kind, model, expected, TOLERANCE.get(COMPUTE_DTYPE[precision], 1e-5))
    run.log_model(model, "model")
    if register:
        run.register_model(register, "model")
    return ok


def export_keras(
    run: Run,
    model: Any,
    probe: np.ndarray,
    *,
    precision: str,
    register: str = "",
    rescale: float = 0.0,
) -> bool:
    """The Keras ``model`` as the run's logged model ``model``: architecture JSON, HDF5
    weights and a summary inside an MLflow pyfunc model, reloaded in the verifier process and
    compared on ``probe`` (a batch of the exported model's inputs: for images, NHWC pixel
    values 0-255) within the tolerance of ``precision`` (mltrack's vocabulary). ``rescale``:
    the factor the training data was scaled by outside the model (1/255): the export puts it
    in front of the model, so it takes the raw pixels. ``register``: also a new version of
    that registered model name. Returns whether the reload matched (``reload_ok``); False,
    exporting nothing, for a run that was stopped (diverged, pruned)."""
    if skipped(run):
        return False
    import keras

    if rescale:  # the model trained on scaled pixels: the export takes raw ones
        model = keras.Sequential(
            [
                keras.Input(np.asarray(probe).shape[1:]),
                keras.layers.Rescaling(rescale, dtype="float32"),
                model,
            ]
        )
    with exporting(run) as folder:
        probe = np.asarray(probe)
        expected = _float32(model.predict(probe, verbose=0))
        backend = {"tensorflow": ["tensorflow"], "torch": ["torch"], "jax": ["jax"]}
        packages = ["keras", "h5py", *backend.get(keras.backend.backend(), [])]
        path = save_mlflow_model(run, folder, "keras", probe, expected, packages)
        if path is None:
            return False
        (path / "model.json").write_text(model.to_json())
        model.save_weights(path / "model.weights.h5")
        lines: list[str] = []
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        (path / "summary.txt").write_text("\n".join(lines) + "\n")
        np.save(folder / "check" / "probe.npy", probe)
        return _finish(run, "keras", path, expected, precision, register)


def export_torch(run: Run, model: Any, probe: Any, *, precision: str, register: str = "") -> bool:
    """TorchScript (traced) and a ``torch.export`` program as the run's logged model ``model``
    (an MLflow pyfunc model serving the program), verified on ``probe`` (a tensor batch of the
    model's inputs, NCHW for images) as ``export_keras`` does; the same arguments and result.

    Tracing, not scripting: torchvision's and transformers' models trace cleanly, while
    scripting fails on many of them. ``torch.jit`` is deprecated from torch 2.15 in favour of
    ``torch.export``; the TorchScript file stays while deployment targets still load it. The
    MLflow model serves the ``torch.export`` program.
    """
    import warnings

    import torch

    if skipped(run):
        return False
    from mltrack.torch.modules import eager

    model = eager(model)  # not the compiled or DDP wrapper: no _orig_mod. keys, traceable
    model.eval()
    parameter = next(model.parameters())
    probe = probe.to(parameter.device, parameter.dtype)
    with exporting(run) as folder, torch.no_grad():
        expected = model(probe).float().cpu().numpy()
        example = probe.float().cpu().numpy()  # numpy has no bfloat16
        path = save_mlflow_model(run, folder, "torch", example, expected, ["torch"])
        if path is None:
            return False
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated")
            traced = torch.jit.trace(model, probe, check_trace=False)
        traced.save(str(path / "model.torchscript.pt"))
        # Any batch size, not only the probe's: the batch dimension is dynamic.
        batch = ({0: torch.export.Dim.DYNAMIC},)
        program = torch.export.export(model, (probe,), dynamic_shapes=batch)
        torch.export.save(program, str(path / "model.pt2"))
        (path / "summary.txt").write_text(f"{model}\n")
        torch.save(probe.cpu(), folder / "check" / "probe.pt")
        (folder / "check" / "device.txt").write_text(str(parameter.device))
        return _finish(run, "torch", path, expected, precision, register)
