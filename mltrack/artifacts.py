"""Model export and round-trip verification.

A saved model is only useful if it loads again and computes the same thing. Each export writes
the files, reloads them **in a fresh Python process** (nothing shared with the training
process: no cached graphs, no custom objects in memory), runs the same fixed probe batch, and
logs the largest absolute difference as ``reload_max_abs_diff`` with a ``reload_ok`` tag.
The whole of it (writing, logging, the fresh-process check) is timed as ``export_wall_s``, a
metric of its own, never part of the training times.

Run as ``python -m mltrack.artifacts keras|torch DIR``: the reloading half, used by ``verify``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mltrack.run import Run

# How close a reload must match: the same kernels on the same machine should agree bit for bit,
# but 16-bit types leave room for a different kernel choice in a new process.
TOLERANCE = {"float64": 1e-9, "float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}
RELOAD_TIMEOUT_S = 600


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


def verify(run: Run, folder: Path, kind: str, expected: np.ndarray, tolerance: float) -> bool:
    """Reload ``folder`` in a fresh process, compare every format on the probe, log the outcome.

    The reloader writes ``reloaded.<format>.npy`` per format it loaded; ``reload_ok`` holds
    only if every format loaded and matched.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "mltrack.artifacts", kind, str(folder)],
        capture_output=True,
        text=True,
        timeout=RELOAD_TIMEOUT_S,
    )
    outputs = sorted(folder.glob("reloaded.*.npy"))
    diffs = {path.name.split(".")[1]: max_abs_diff(expected, np.load(path)) for path in outputs}
    if proc.returncode != 0 or not diffs:
        detail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        run.set_tags({"reload_error": detail[0]})
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
def timed(run: Run) -> Iterator[None]:
    start = time.perf_counter()
    yield
    run.log_metrics({"export_wall_s": time.perf_counter() - start}, step=0)


def skipped(run: Run) -> bool:
    """A run that was stopped (diverged, pruned) has no model worth keeping."""
    if run.stopping:
        run.set_tags({"export": f"skipped: the run {run.outcome}"})
    return run.stopping


def export_keras(run: Run, model: Any, probe: np.ndarray, compute_dtype: str) -> bool:
    """Architecture JSON + HDF5 weights + summary, logged under ``model/`` and verified."""
    if skipped(run):
        return False
    with tempfile.TemporaryDirectory(prefix="mltrack-export-") as tmp, timed(run):
        folder = Path(tmp)
        (folder / "model.json").write_text(model.to_json())
        model.save_weights(folder / "model.weights.h5")
        lines: list[str] = []
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        (folder / "summary.txt").write_text("\n".join(lines) + "\n")
        for name in ("model.json", "model.weights.h5", "summary.txt"):
            run.log_artifact(folder / name, "model")
        np.save(folder / "probe.npy", probe)
        expected = _float32(model.predict(probe, verbose=0))
        return verify(run, folder, "keras", expected, TOLERANCE.get(compute_dtype, 1e-5))


def export_torch(run: Run, model: Any, probe: Any, compute_dtype: str) -> bool:
    """TorchScript (traced) and a ``torch.export`` program, logged under ``model/``, verified.

    Tracing, not scripting: torchvision's and transformers' models trace cleanly, while
    scripting fails on many of them. ``torch.jit`` is deprecated from torch 2.15 in favour of
    ``torch.export``; the TorchScript file stays while deployment targets still load it.
    """
    import warnings

    import torch

    if skipped(run):
        return False
    model.eval()
    parameter = next(model.parameters())
    probe = probe.to(parameter.device, parameter.dtype)
    with (
        tempfile.TemporaryDirectory(prefix="mltrack-export-") as tmp,
        torch.no_grad(),
        timed(run),
    ):
        folder = Path(tmp)
        expected = model(probe).float().cpu().numpy()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated")
            traced = torch.jit.trace(model, probe, check_trace=False)
        traced.save(str(folder / "model.torchscript.pt"))
        # Any batch size, not only the probe's: the batch dimension is dynamic.
        batch = ({0: torch.export.Dim.DYNAMIC},)
        program = torch.export.export(model, (probe,), dynamic_shapes=batch)
        torch.export.save(program, str(folder / "model.pt2"))
        (folder / "summary.txt").write_text(f"{model}\n")
        for name in ("model.torchscript.pt", "model.pt2", "summary.txt"):
            run.log_artifact(folder / name, "model")
        torch.save(probe.cpu(), folder / "probe.pt")
        (folder / "device.txt").write_text(str(parameter.device))
        return verify(run, folder, "torch", expected, TOLERANCE.get(compute_dtype, 1e-5))


def _reload_keras(folder: Path) -> dict[str, np.ndarray]:
    import keras

    model = keras.models.model_from_json((folder / "model.json").read_text())
    model.load_weights(folder / "model.weights.h5")
    return {"keras": _float32(model.predict(np.load(folder / "probe.npy"), verbose=0))}


def _reload_torch(folder: Path) -> dict[str, np.ndarray]:
    import torch

    device = torch.device((folder / "device.txt").read_text())
    probe = torch.load(folder / "probe.pt").to(device)
    scripted = torch.jit.load(str(folder / "model.torchscript.pt"), map_location=device)
    program = torch.export.load(str(folder / "model.pt2")).module()
    with torch.no_grad():
        return {
            "torchscript": scripted(probe).float().cpu().numpy(),
            "export": program(probe).float().cpu().numpy(),
        }


RELOADERS = {"keras": _reload_keras, "torch": _reload_torch}


def main(argv: list[str] | None = None) -> int:
    kind, folder = (argv if argv is not None else sys.argv[1:])[:2]
    for name, output in RELOADERS[kind](Path(folder)).items():
        np.save(Path(folder) / f"reloaded.{name}.npy", output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
