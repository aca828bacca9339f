"""PyTorch training throughput: fp32 vs bf16 autocast, pinned vs unpinned loading, one run.

    python -m benchmarks.torch_throughput                    # torchvision ResNet50, ~4 minutes
    python -m benchmarks.torch_throughput --model resnet50 --device cuda --samples 8192

Every variant trains the same model (fresh weights, same seed) on the same synthetic CIFAR
images through ``mltrack.torch.fit``; variants alternate over trials. Reported: training
samples per second over steady-state epochs (epoch 0 is warm-up), from the ledger, whose epoch
clock is read after ``torch.cuda.synchronize()`` on a GPU. Validation is outside the epoch
clock. Pinned memory only exists with an accelerator: on a CPU PyTorch ignores
``pin_memory=True`` (with a warning), so those rows measure that nothing changes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from pathlib import Path

from experiments.cifar_torch import Config, build_model, loaders
from mltrack.studies.data import synthetic
from mltrack.tracking.run import start_run


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="resnet50_torchvision")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch

    from mltrack import torch as mt

    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    data = synthetic.images((32, 32, 3), 10, args.samples, 64, seed=0)
    store = f"sqlite:///{Path(tempfile.mkdtemp()) / 'mlflow.db'}"
    variants = {
        "fp32, unpinned": ("fp32", False),
        "fp32, pinned": ("fp32", True),
        "mixed_bf16, unpinned": ("mixed_bf16", False),
        "mixed_bf16, pinned": ("mixed_bf16", True),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for trial in range(args.trials):
        # ABBA order: a variant that always ran later would look faster as the process warms.
        order = list(variants.items()) if trial % 2 == 0 else list(variants.items())[::-1]
        for name, (precision, pinned) in order:
            cfg = Config(
                model=args.model,
                batch_size=args.batch_size,
                pin_memory=pinned,
                seed=trial,
                device=args.device,
            )
            settings = mt.Settings(
                precision=precision, pin_memory=pinned, non_blocking=pinned, device=args.device
            )
            torch.manual_seed(trial)
            model = mt.prepare(build_model(cfg, 10), settings, precision)
            train, test = loaders(cfg, data)
            with start_run("throughput", tracking_uri=store) as run:
                _, summary = mt.fit(
                    run,
                    model,
                    torch.optim.Adam(model.parameters()),
                    train,
                    test,
                    epochs=args.epochs,
                    settings=settings,
                )
            rates[name].append(summary["steady_samples_per_s"])
            print(
                f"trial {trial + 1} {name}: {summary['steady_samples_per_s']:.1f} samples/s",
                flush=True,
            )

    device = mt.Settings(device=args.device).resolved_device()
    base = statistics.median(rates["fp32, unpinned"])
    print(
        f"\n{args.model}, {args.samples} images 32×32, batch {args.batch_size}, "
        f"{args.epochs} epochs (first is warm-up), {args.trials} trials, device {device}"
    )
    print("| variant | samples/s (median) | min | max | vs fp32 unpinned |\n|---|---|---|---|---|")
    for name, values in rates.items():
        print(
            f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | "
            f"{max(values):.1f} | {statistics.median(values) / base:.2f}× |"
        )


if __name__ == "__main__":
    main()
