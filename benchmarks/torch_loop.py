"""mltrack's PyTorch loop against a plain one: the loop's own cost per steady epoch.

    python -m benchmarks.torch_loop                      # 5 pairs x 2 models x 2 precisions
    python -m benchmarks.torch_loop --pairs 7 --models resnet50_torchvision --precisions fp32

Both sides are fresh processes training the same model (fresh weights, same seed) on the same
synthetic 32×32 images, batch 32, Adam, for ``--epochs`` epochs: the plain side is the loop a
notebook writes (``(x.float()/255 - mean)/std`` inside the model, forward, cross-entropy,
``zero_grad``, ``backward``, ``step``, autocast for a mixed precision); the other is
``mltrack.torch.fit`` into a throwaway store. Each side prints its steady epochs' training time
(epochs after the first, training steps only: the plain side times its batch loop with
``perf_counter``, mltrack's is its ``train_wall_s``). Pairs alternate which side goes first, so
drift on this shared VM hits both alike; reported: the medians, their ratio, and the per-pair
ratios.

Target (issue 21): mltrack / plain ≤ 1.02 for ResNet50 in fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SIDE = r"""
import json, sys, time
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

model_name, precision, epochs, images, side, store = sys.argv[1:7]
epochs, images = int(epochs), int(images)
torch.manual_seed(0)
from benchmarks.torch_models import loaders, model

net = model(model_name)
train, val = loaders(images, 32)
optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
steady = []
if side == "plain":
    autocast = {"mixed_bf16": torch.bfloat16}.get(precision)
    for epoch in range(epochs):
        net.train()
        start = time.perf_counter()
        for xb, yb in train:
            with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
                loss = nn.functional.cross_entropy(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        steady.append(time.perf_counter() - start)
        net.eval()
        with torch.no_grad():
            for xb, yb in val:
                net(xb)
else:
    from mltrack import start_run
    from mltrack import torch as mt

    settings = mt.Settings(precision=precision, device="cpu")
    with start_run("bench", tracking_uri=store) as run:
        net = mt.prepare(net, settings, precision)
        original = run.end_epoch

        def end_epoch(epoch, metrics):
            steady.append(metrics["train_wall_s"])
            original(epoch, metrics)

        run.end_epoch = end_epoch
        mt.fit(run, net, optimizer, train, val, epochs=epochs, settings=settings)
print(json.dumps(steady[1:]))
"""


def side(args: argparse.Namespace, model: str, precision: str, which: str, store: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_LOGGING_LEVEL": "WARNING"}
    out = subprocess.run(
        [
            *(sys.executable, "-c", SIDE, model, precision),
            *(str(args.epochs), str(args.images), which, store),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{which} {model} {precision} failed:\n{out.stderr[-2000:]}")
    return statistics.median(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--models", default="resnet50_torchvision,seed003_mlp")
    parser.add_argument("--precisions", default="fp32,mixed_bf16")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mltrack-loop-") as tmp:
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for model in args.models.split(","):
            for precision in args.precisions.split(","):
                times: dict[str, list[float]] = {"plain": [], "mltrack": []}
                for pair in range(args.pairs):
                    order = ("plain", "mltrack") if pair % 2 == 0 else ("mltrack", "plain")
                    for which in order:
                        times[which].append(side(args, model, precision, which, store))
                plain, tracked = (statistics.median(times[k]) for k in ("plain", "mltrack"))
                pairs = ", ".join(
                    f"{t / p:.3f}" for p, t in zip(times["plain"], times["mltrack"], strict=True)
                )
                print(
                    f"{model} {precision}: steady epoch train plain {plain:.3f} s, mltrack "
                    f"{tracked:.3f} s, ratio {tracked / plain:.3f} (per pair {pairs})",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
