"""A user's own PyTorch training through ``mltrack.torch.fit``, for the distributed tests to
launch under ``torchrun`` (tests/test_distributed.py), with a fault to inject on one rank.

    torchrun --standalone --nproc_per_node=2 tests/ddp_job.py --tracking-uri URI --out DIR \
        [--fault raise|kill|nan|slow --fault-rank 1 --fault-step 6]

Each rank saves its trained weights to ``DIR/rank<R>.pt`` (the tests compare them).
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mltrack
from mltrack import torch as mt
from mltrack.tracking import distributed


def faulty_forward(fault: str, rank: int, step: int, loss_fn: Any) -> Any:
    """The default forward, with ``fault`` from micro-step ``step`` on rank ``rank``."""
    seen = [0]
    here = distributed.world().rank

    def forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
        seen[0] += 1
        if here == rank and seen[0] >= step:
            if fault == "raise":
                raise ValueError(f"injected fault at micro-step {seen[0]}")
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if fault == "slow":
                time.sleep(0.05)
        outputs = model(x)
        loss = loss_fn(outputs, y)
        if fault == "nan" and here == rank and seen[0] >= step:
            loss = loss * float("nan")
        return outputs, loss

    return forward


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--accumulation-steps", type=int, default=1)
    parser.add_argument("--fault", default="none")
    parser.add_argument("--fault-rank", type=int, default=1)
    parser.add_argument("--fault-step", type=int, default=6)
    args = parser.parse_args()

    torch.manual_seed(0)
    x, y = torch.randn(256, 20), torch.randint(0, 4, (256,))
    x[:, 0] += y  # learnable
    train = DataLoader(
        TensorDataset(x[:192], y[:192]),
        batch_size=16,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    test = DataLoader(TensorDataset(x[192:], y[192:]), batch_size=10)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    settings = mt.Settings(accumulation_steps=args.accumulation_steps, check_every=2)
    forward = faulty_forward(args.fault, args.fault_rank, args.fault_step, nn.CrossEntropyLoss())
    with mltrack.start_run("ddp-job", tracking_uri=args.tracking_uri) as run:
        model = mt.prepare(model, settings, settings.precision)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model, _ = mt.fit(
            run, model, optimizer, train, test, epochs=args.epochs, settings=settings,
            forward=forward,
        )  # fmt: skip
        rank = distributed.world().rank
        torch.save(model.state_dict(), Path(args.out) / f"rank{rank}.pt")
        print(f"rank {rank} run {run.run_id}", flush=True)


if __name__ == "__main__":
    main()
