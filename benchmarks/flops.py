"""FLOPs per training sample, counted by mltrack, beside a hand count; and this machine's peaks.

    python -m benchmarks.flops        # about 20 s: one process per framework, then calibration

The model is the CIFAR CNN of ``experiments.cifar_amp --model cnn`` (and the same layers in
PyTorch). mltrack counts Keras from the layers' shapes and PyTorch with torch's own
``FlopCounterMode``; the hand count below multiplies out each layer. Convention (MFU's): 2 FLOPs
per multiply-add of dense and convolution layers; training = forward + weight gradients + input
gradients of every layer but the first. Target (issue 10): counted within 5% of the hand count.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def hand_count() -> float:
    """The seed-003 CNN on 32×32×3, layer by layer: (multiply-adds per output) × outputs."""
    forward_macs = [
        3 * 3 * 3 * 32 * (32 * 32),  # conv 32, 3×3, same        -> 32×32×32
        3 * 3 * 32 * 32 * (30 * 30),  # conv 32, 3×3, valid      -> 30×30×32, pool -> 15×15
        3 * 3 * 32 * 64 * (15 * 15),  # conv 64, 3×3, same       -> 15×15×64
        3 * 3 * 64 * 64 * (13 * 13),  # conv 64, 3×3, valid      -> 13×13×64, pool -> 6×6
        (6 * 6 * 64) * 512,  # dense 512
        512 * 10,  # dense 10
    ]
    forward = [2.0 * m for m in forward_macs]
    return 3 * sum(forward) - forward[0]


def count_keras() -> float:
    from experiments.cifar_amp import build_model
    from mltrack.measure.efficiency import keras_flops_per_sample

    return keras_flops_per_sample(build_model("cnn", "fp32", 10))


def torch_model() -> object:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3),
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 6 * 64, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )  # fmt: skip


def count_torch() -> float:
    import torch

    from mltrack.measure.efficiency import torch_flops_per_sample

    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    return torch_flops_per_sample(torch_model(), torch.nn.functional.cross_entropy, x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", choices=("keras", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count:  # the child process: one framework only (TF and torch abort together)
        print(json.dumps(count_keras() if args.count == "keras" else count_torch()))
        return
    hand = hand_count()
    print(f"seed-003 CIFAR CNN, FLOPs per training sample (hand count {hand:,.0f})\n")
    print("| framework | counted by mltrack | hand count | counted / hand |")
    print("|---|---|---|---|")
    for framework in ("keras", "torch"):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.flops", "--count", framework],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        counted = float(out.strip().splitlines()[-1])
        print(f"| {framework} | {counted:,.0f} | {hand:,.0f} | {counted / hand:.4f} |")

    from mltrack.measure import peaks

    for framework in peaks.FRAMEWORKS:
        found = subprocess.run(
            [sys.executable, "-c", peaks.CALIBRATION, framework, json.dumps(peaks.SHAPES)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[-1]
        print(f"\nThis machine's peaks with {framework} ({peaks.method(framework)}), TFLOP/s:")
        print(", ".join(f"{k} {v:.3g}" for k, v in json.loads(found).items()))
    from mltrack.measure.environment import detect_hardware

    bounds, why = peaks.bounds(detect_hardware())
    print(
        "\nPhysical bound, TFLOP/s: "
        + (", ".join(f"{k} {v:.3g}" for k, v in bounds.items()) or why)
    )


if __name__ == "__main__":
    main()
