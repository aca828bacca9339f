"""Compilation as a speed technique on this machine: compiled vs eager steady samples/s, and the
compilation's one-off cost, for the seed-003 MLP and ResNet50 (issue 29).

    python -m benchmarks.compile                      # 3 pairs, both models, PyTorch
    python -m benchmarks.compile --pairs 5 --models seed003_mlp --images 2048

Each side is a fresh process training the model (fresh weights, seed 0) through
``mltrack.torch.fit`` on synthetic 32×32 images, batch 32, Adam, fp32, for ``--epochs`` epochs,
into a throwaway store: eager, or ``torch.compile``d (``Settings(compile=True)``). Reported per
side: ``steady_samples_per_s`` (the epochs after the first: the compilation, which happens in
the first micro-step, is not in it) and, compiled, ``compile_wall_s`` (the first micro-step
less the second). Pairs alternate which side goes first; medians and the ratio.
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
import json, sys
import torch
from benchmarks.torch_models import loaders, model
from mltrack import start_run
from mltrack import torch as mt

name, epochs, images, compiled, store = sys.argv[1:6]
torch.manual_seed(0)
net = model(name)
train, val = loaders(int(images), 32)
settings = mt.Settings(device="cpu", compile=compiled == "1")
with start_run("compile-bench", tracking_uri=store) as run:
    net = mt.prepare(net, settings, "fp32")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    _, summary = mt.fit(run, net, optimizer, train, val, epochs=int(epochs), settings=settings)
print("RESULT " + json.dumps({"rate": summary["steady_samples_per_s"],
                              "compile": run.latest.get("compile_wall_s")}), flush=True)
"""


def side(model: str, compiled: bool, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    script = folder / "side.py"
    script.write_text(SIDE)
    store = f"sqlite:///{folder / 'bench.db'}"
    command = [sys.executable, str(script), model, str(args.epochs), str(args.images)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLTRACK_SPOOL_DIR": str(folder / "spool")}
    result = subprocess.run(
        [*command, "1" if compiled else "0", store],
        env=env, capture_output=True, text=True, cwd=folder,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{model} compiled={compiled} failed:\n{result.stderr[-3000:]}")
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--models", default="seed003_mlp,resnet50_torchvision")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    print("| model | eager samples/s | compiled samples/s | compiled / eager | compile_wall_s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            eager: list[float] = []
            compiled: list[float] = []
            costs: list[float] = []
            for pair in range(args.pairs):
                for on in (False, True) if pair % 2 == 0 else (True, False):
                    found = side(model, on, args, Path(tmp))
                    (compiled if on else eager).append(found["rate"])
                    if on and found["compile"] is not None:
                        costs.append(found["compile"])
            e, c = statistics.median(eager), statistics.median(compiled)
            cost = f"{statistics.median(costs):.1f}" if costs else "–"
            print(f"| {model} | {e:.1f} | {c:.1f} | {c / e:.3f} | {cost} |", flush=True)
    print(f"\n{args.images} images, batch 32, fp32, {args.epochs} epochs, {args.pairs} pairs")


if __name__ == "__main__":
    main()
