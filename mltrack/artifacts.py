"""Model export and round-trip verification.

A saved model is only useful if it loads again and computes the same thing. Each export writes
the files, reloads them **in a fresh Python process** (nothing shared with the training
process: no cached graphs, no custom objects in memory), runs the same fixed probe batch, and
logs the largest absolute difference as ``reload_max_abs_diff`` with a ``reload_ok`` tag.

Run as ``python -m mltrack.artifacts keras DIR``: the reloading half, used by ``verify``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mltrack.run import Run

# How close a reload must match: the same kernels on the same machine should agree bit for bit,
# but 16-bit types leave room for a different kernel choice in a new process.
TOLERANCE = {"float64": 1e-9, "float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}
RELOAD_TIMEOUT_S = 600


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
    """Reload ``folder`` in a fresh process, compare on the probe, log the outcome."""
    proc = subprocess.run(
        [sys.executable, "-m", "mltrack.artifacts", kind, str(folder)],
        capture_output=True,
        text=True,
        timeout=RELOAD_TIMEOUT_S,
    )
    reloaded = folder / "reloaded.npy"
    if proc.returncode != 0 or not reloaded.exists():
        diff, detail = float("inf"), proc.stderr.strip().splitlines()[-1:] or ["no output"]
        run.set_tags({"reload_error": detail[0]})
    else:
        diff = max_abs_diff(expected, np.load(reloaded))
    ok = diff <= tolerance
    run.log_metrics({"reload_max_abs_diff": diff}, step=0)
    run.set_tags({"reload_ok": str(ok).lower(), "reload_tolerance": tolerance})
    return ok


def export_keras(run: Run, model: Any, probe: np.ndarray, compute_dtype: str) -> bool:
    """Architecture JSON + HDF5 weights + summary, logged under ``model/`` and verified."""
    with tempfile.TemporaryDirectory(prefix="mltrack-export-") as tmp:
        folder = Path(tmp)
        (folder / "model.json").write_text(model.to_json())
        model.save_weights(folder / "model.weights.h5")
        lines: list[str] = []
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        (folder / "summary.txt").write_text("\n".join(lines) + "\n")
        for name in ("model.json", "model.weights.h5", "summary.txt"):
            run.log_artifact(folder / name, "model")
        np.save(folder / "probe.npy", probe)
        expected = np.asarray(model.predict(probe, verbose=0))
        return verify(run, folder, "keras", expected, TOLERANCE.get(compute_dtype, 1e-5))


def _reload_keras(folder: Path) -> np.ndarray:
    import keras

    model = keras.models.model_from_json((folder / "model.json").read_text())
    model.load_weights(folder / "model.weights.h5")
    return np.asarray(model.predict(np.load(folder / "probe.npy"), verbose=0))


RELOADERS = {"keras": _reload_keras}


def main(argv: list[str] | None = None) -> int:
    kind, folder = (argv if argv is not None else sys.argv[1:])[:2]
    out = RELOADERS[kind](Path(folder))
    np.save(Path(folder) / "reloaded.npy", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
