"""Data parallelism on this machine: 1 vs 2 processes, and mltrack's distributed loop against a
plain DDP loop on the same steps.

    python -m benchmarks.ddp_scaling                    # 5 pairs, world sizes 1 and 2
    python -m benchmarks.ddp_scaling --pairs 7 --model seed003_mlp --images 512

Every side is a fresh ``torchrun --standalone --nproc-per-node N`` job (gloo on the CPU, one
thread a process: ``OMP_NUM_THREADS=1``, torchrun's default) training the same model (fresh
weights, seed 0) on the same synthetic 32×32 images, ``--batch-size`` a process, Adam, for
``--epochs`` epochs. The plain side is the loop PyTorch's DDP tutorial writes (a
``DistributedSampler`` with ``set_epoch``, ``DistributedDataParallel``, ``zero_grad``,
``backward``, ``step``); the other is ``mltrack.torch.fit`` into a throwaway store. Each side
reports its global samples/s over the steady epochs (after the first): all ranks' samples / the
slowest rank's training time (the plain side all-reduces its epoch times with MAX; mltrack's is
its ``steady_samples_per_s``). Pairs alternate which side goes first, so drift on this shared VM
hits both alike; reported: the medians per side and world size, mltrack's time ratio over plain
(plain rate / mltrack rate), and the scaling efficiency (rate at N ÷ (N × rate at 1)).

Target (issue 27): mltrack / plain ≤ 1.03 at world size 2.
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
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

model_name, epochs, images, batch, side, store = sys.argv[1:7]
epochs, images, batch = int(epochs), int(images), int(batch)
torch.manual_seed(0)
from benchmarks.torch_models import loaders, model
from mltrack.tracking import distributed

net = model(model_name)
train, val = loaders(images, batch)
world = distributed.world()
if side == "plain":
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    if world.distributed:
        dist.init_process_group("gloo")
        sampler = DistributedSampler(train.dataset, shuffle=True, seed=0)
        train = DataLoader(train.dataset, batch_size=batch, sampler=sampler)
        model = DistributedDataParallel(net)
    else:
        model = net
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times, samples = [], 0
    for epoch in range(epochs):
        if world.distributed:
            train.sampler.set_epoch(epoch)
        model.train()
        start, seen = time.perf_counter(), 0
        for xb, yb in train:
            loss = nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(yb)
        wall = torch.tensor([time.perf_counter() - start, float(seen)], dtype=torch.float64)
        if world.distributed:  # the slowest rank's time, every rank's samples
            slowest, total = wall.clone(), wall.clone()
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            wall = torch.stack([slowest[0], total[1]])
        times.append((float(wall[0]), float(wall[1])))
        model.eval()
        with torch.no_grad():
            for xb, yb in val:
                net(xb)
    steady = times[1:]
    rate = sum(n for _, n in steady) / sum(t for t, _ in steady)
else:
    from mltrack import start_run
    from mltrack import torch as mt

    settings = mt.Settings(device="cpu")
    with start_run("ddp-scaling-bench", tracking_uri=store) as run:
        net = mt.prepare(net, settings, "fp32")
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        _, summary = mt.fit(run, net, optimizer, train, val, epochs=epochs, settings=settings)
    rate = summary["steady_samples_per_s"] if world.is_rank_zero else 0.0
if world.is_rank_zero:
    print("RESULT " + json.dumps({"samples_per_s": rate}), flush=True)
"""


def side(name: str, nproc: int, args: argparse.Namespace, folder: Path) -> float:
    store = f"sqlite:///{folder / f'{name}-{nproc}.db'}"
    script = folder / "side.py"
    script.write_text(SIDE)
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
        *("--nproc-per-node", str(nproc), str(script), args.model, str(args.epochs)),
        *(str(args.images), str(args.batch_size), name, store),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "MLTRACK_SPOOL_DIR": str(folder / "spool"),
    }
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=folder)
    if result.returncode != 0:
        raise SystemExit(f"{name} x{nproc} failed:\n{result.stderr[-3000:]}")
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return float(json.loads(line.removeprefix("RESULT "))["samples_per_s"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--model", default="resnet50_torchvision")
    parser.add_argument("--images", type=int, default=256, help="training images an epoch")
    parser.add_argument("--batch-size", type=int, default=32, help="a process's batch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--world-sizes", default="1,2")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.world_sizes.split(",")]
    rates: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            for nproc in sizes:
                order = ("plain", "mltrack") if pair % 2 == 0 else ("mltrack", "plain")
                for name in order:
                    rate = side(name, nproc, args, Path(tmp))
                    rates.setdefault((name, nproc), []).append(rate)
                    print(f"pair {pair} x{nproc} {name}: {rate:.1f} samples/s", flush=True)
    print(f"\n{args.model}, {args.images} images, batch {args.batch_size} a process, "
          f"{args.epochs} epochs, {args.pairs} pairs (median samples/s, global)")  # fmt: skip
    print("| world size | plain DDP | mltrack | mltrack / plain (time) | scaling efficiency |")
    print("|---|---|---|---|---|")
    base = {name: statistics.median(rates[(name, sizes[0])]) for name in ("plain", "mltrack")}
    for nproc in sizes:
        plain = statistics.median(rates[("plain", nproc)])
        tracked = statistics.median(rates[("mltrack", nproc)])
        both = zip(rates[("plain", nproc)], rates[("mltrack", nproc)], strict=True)
        pairs = [p / m for p, m in both]
        efficiency = {n: statistics.median(rates[(n, nproc)]) / (nproc / sizes[0]) / base[n]
                      for n in ("plain", "mltrack")}  # fmt: skip
        print(
            f"| {nproc} | {plain:.1f} | {tracked:.1f} | {plain / tracked:.3f} "
            f"(pairs {', '.join(f'{r:.2f}' for r in pairs)}) | plain {efficiency['plain']:.2f}, "
            f"mltrack {efficiency['mltrack']:.2f} |"
        )


if __name__ == "__main__":
    main()
