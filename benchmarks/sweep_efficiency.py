"""Sweep efficiency on real offline data: TPE + median pruning vs the full grid, same space.

    python -m benchmarks.sweep_efficiency            # digits, 24-point grid × 5 epochs, ~6 min
    python -m benchmarks.sweep_efficiency --seeds 3  # repeat the TPE side with 3 sampler seeds

Both sides run ``mltrack sweep``'s own ``Sweep`` over ``experiments.fashion_mnist_precision
--dataset digits`` (scikit-learn's real handwritten digits, no download) with the same search
space: precision × batch size × accumulation steps. The grid trains every point for every
epoch; TPE with the median pruner stops unpromising trials early. Reported: the grid's best
final val_accuracy, and for TPE the epochs spent (pruned trials count the epochs they ran)
until its first trial within 0.5 accuracy points of that best, as a share of the grid's epochs.
Target (issue 4): at most 40%.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

SPACE = [
    "--space-precision",
    "fp32,mixed_bf16",
    "--space-batch-size",
    "16,32,64,128",
    "--space-accumulation-steps",
    "1,2,4",
]


def run_sweep(folder: Path, name: str, extra: list[str], epochs: int) -> Any:
    from mltrack.cli import build_parser
    from mltrack.sweep import Sweep, from_namespace

    argv = [
        "sweep",
        "experiments.fashion_mnist_precision",
        "--dataset",
        "digits",
        "--epochs",
        str(epochs),
        "--no-export",
        "--study",
        name,
        "--storage",
        f"sqlite:///{folder / 'optuna.db'}",
        "--tracking-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        *SPACE,
        *extra,
    ]
    namespace, rest = build_parser().parse_known_args(argv)
    return Sweep(from_namespace(namespace, rest)).run()


def epochs_of(trial: Any) -> int:
    return len(trial.intermediate_values)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--tpe-trials", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sweep-efficiency-"))

    grid = run_sweep(folder, "grid", ["--sampler", "grid", "--pruner", "none"], args.epochs)
    grid_trials = [t for t in grid.get_trials() if t.values]
    grid_epochs = sum(epochs_of(t) for t in grid.get_trials())
    best = max(t.values[0] for t in grid_trials)
    print(
        f"\ngrid: {len(grid.get_trials())} trials, {grid_epochs} epochs, best val_accuracy "
        f"{best:.4f} ({grid.best_trial.params})",
        flush=True,
    )

    print(
        "\n| TPE seed | trials run | epochs to within 0.5 pt | share of grid epochs | "
        "best TPE val_accuracy |\n|---|---|---|---|---|"
    )
    for seed in range(args.seeds):
        study = run_sweep(
            folder,
            f"tpe-{seed}",
            [
                "--sampler",
                "tpe",
                "--pruner",
                "median",
                "--sampler-seed",
                str(seed),
                "--trials",
                str(args.tpe_trials),
            ],
            args.epochs,
        )
        spent, reached = 0, None
        for trial in sorted(study.get_trials(), key=lambda t: t.number):
            spent += epochs_of(trial)
            if trial.values and trial.values[0] >= best - 0.005:
                reached = spent
                break
        tpe_best = max((t.values[0] for t in study.get_trials() if t.values), default=float("nan"))
        share = f"{reached / grid_epochs:.0%}" if reached is not None else "not reached"
        print(
            f"| {seed} | {len(study.get_trials())} | {reached if reached is not None else '–'} "
            f"| {share} | {tpe_best:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
