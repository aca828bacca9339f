"""What ``mltrack sweep`` costs per trial when the training itself costs nothing.

    python -m benchmarks.sweep_bookkeeping                 # 20 and 200 trials, about 2 minutes
    python -m benchmarks.sweep_bookkeeping --trials 400

The experiment below (``EXPERIMENT``, loaded by the sweep like any experiment module) trains
nothing: each trial logs ``--epochs`` epochs of a made-up ``val_accuracy`` and returns. So
everything the sweep process spends is bookkeeping: Optuna's sampler, pruner and storage
(sqlite), the MLflow run of each trial (creation, params, tags, metrics, journal, end), its
heartbeats, and the shared parent run. Two sweeps run as whole processes into fresh stores,
one of ``--few`` trials and one of ``--trials``; the per-trial cost is the difference of their
wall times over the difference of their trial counts, so process start-up and the one-time
set-up cancel out. Both use the defaults a user gets (TPE sampler, median pruner) unless
``--sampler random --pruner none`` asks for Optuna's cheapest, to show Optuna's own share.

Target (issue 13): ≤ 0.2 s per trial over 200 trials on sqlite.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mltrack.config import ExperimentConfig
from mltrack.experiment import Experiment
from mltrack.tracking.run import Run

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("none",)

    epochs: int = 3
    export: bool = False


class Nothing:
    def params(self) -> dict[str, object]:
        return {"dataset": "none"}


def train(cfg: Config, data: Nothing, run: Run) -> dict[str, float]:
    """A made-up learning curve that depends on the suggested values, so TPE has a signal."""
    quality = 0.5 + 0.1 * (cfg.precision == "fp32") + 0.01 * cfg.accumulation_steps
    for epoch in range(cfg.epochs):
        run.end_epoch(epoch, {"val_accuracy": quality * (epoch + 1) / cfg.epochs})
    return {"val_accuracy": quality}


EXPERIMENT = Experiment("sweep_bookkeeping", Config, lambda cfg: Nothing(), train)


def sweep(trials: int, epochs: int, sampler: str, pruner: str) -> float:
    """Wall seconds of one ``mltrack sweep`` of ``trials`` into a fresh store."""
    with tempfile.TemporaryDirectory(prefix="mltrack-sweep-cost-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(PYTHONPATH=str(ROOT), MLTRACK_SPOOL_DIR=str(Path(tmp) / "spool"))
        command = [
            *(sys.executable, "-m", "mltrack.cli", "sweep", "benchmarks.sweep_bookkeeping"),
            *("--trials", str(trials), "--sampler-seed", "0", "--epochs", str(epochs)),
            *("--sampler", sampler, "--pruner", pruner),
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"the sweep failed:\n{done.stderr[-3000:]}")
        return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--few", type=int, default=20)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sampler", default="tpe", help="as mltrack sweep's (default tpe)")
    parser.add_argument("--pruner", default="median", help="as mltrack sweep's (default median)")
    args = parser.parse_args(argv)
    few = sweep(args.few, args.epochs, args.sampler, args.pruner)
    many = sweep(args.trials, args.epochs, args.sampler, args.pruner)
    per_trial = (many - few) / (args.trials - args.few)
    print("| trials | wall s |\n|---|---|")
    print(f"| {args.few} | {few:.1f} |\n| {args.trials} | {many:.1f} |")
    print(
        f"\nper trial: {per_trial:.3f} s ({args.epochs} epochs each, sampler {args.sampler}, "
        f"pruner {args.pruner}; target ≤ 0.2 s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
