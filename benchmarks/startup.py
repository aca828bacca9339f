"""The main commands as a user feels them: whole processes, a bare script vs the experiment.

    python -m benchmarks.startup                    # Keras: 5 pairs, about 8 minutes here
    python -m benchmarks.startup --pairs 7 --epochs 3
    python -m benchmarks.startup --framework torch  # PyTorch: about 6 minutes here

Both sides are fresh ``python`` processes training the same model (the seed-003 MLP of
``experiments.cifar_amp``, SGD 0.01, one-hot labels) on the same synthetic shapes (4096 32×32×3
training images, 1024 for validation, batch 256, fp32): the bare side is a plain Keras script
(build, compile, fit, evaluate, nothing tracked); the other is the README's command with
``--no-export``, into one embedded store that exists already, as it does after a user's first run.
Each process is timed from spawn to exit: wall clock, CPU of the process and its children
(``wait4``), peak RSS, and the time from spawn to its first training step (an import hook in
both sides' ``sitecustomize`` marks the first ``on_train_batch_begin`` of Keras, the first
optimizer step of PyTorch). The tracked side's writer process (``mltrack.tracking.writer``, its own
session, not a waited-for child) reports its CPU at exit (``MLTRACK_WRITER_REPORT``), shown
beside the training process's own. The pairs alternate which side goes first, so drift on this
shared VM hits both alike; the figures are the medians and their ratio, and the per-pair
differences.

``--framework torch`` is the PyTorch twin: ``experiments.cifar_torch --model
resnet50_torchvision`` (torchvision's ResNet50, whose strided stem makes a 32×32 image 60×
cheaper than the seed's CIFAR ResNet50, which takes about 14 s a batch of 128 on this CPU;
otherwise the seed-004 recipe: Adam under OneCycleLR stepped per micro-batch, gradients clipped,
its loaders with 2 workers; fp32) on 1024 synthetic images, 2 epochs, batch 128, against a
plain loop over the same model, loaders, optimizer and scheduler (built by the experiment's own
functions) that evaluates accuracy each epoch and tracks nothing.

Targets (issues 13, 21 and 28): the training process's wall ≤ 1.03× the bare script's and
≤ +1.0 s; its own CPU ≤ 1.03×.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BARE = """
import sys
import keras
from experiments.cifar_amp import build_model
from mltrack.studies.data import synthetic

size, epochs, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
data = synthetic.images((32, 32, 3), 10, size, max(size // 4, 1), 0)
keras.utils.set_random_seed(0)
model = build_model("mlp", "fp32", data.num_classes)  # the main command's seed-003 recipe
model.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy", metrics=["accuracy"])
y_train = keras.utils.to_categorical(data.y_train, 10)
y_test = keras.utils.to_categorical(data.y_test, 10)
model.fit(data.x_train, y_train, epochs=epochs, batch_size=batch,
          validation_data=(data.x_test, y_test), verbose=2)
model.evaluate(data.x_test, y_test, batch_size=batch, verbose=0)
"""

BARE_TORCH = """
import sys
import torch
from torch import nn
from experiments.cifar_torch import Config, build_model, loaders, load_data
from mltrack.studies import recipes

size, epochs, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = Config(dataset="synthetic", synthetic_size=size, epochs=epochs, batch_size=batch,
             precision="fp32", export=False, model=sys.argv[4])
recipes.resolve(cfg)
data = load_data(cfg)
torch.manual_seed(0)
model = build_model(cfg, data.num_classes)  # the experiment's seed-004 recipe
train, test = loaders(cfg, data)
optimizer, scheduler, every = recipes.optimizer(cfg, model, len(train))
loss_fn = nn.CrossEntropyLoss()
for epoch in range(cfg.epochs):
    model.train()
    for x, y in train:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_value:
            nn.utils.clip_grad_value_(model.parameters(), cfg.clip_grad_value)
        optimizer.step()
        if scheduler is not None and every == "micro_batch":
            scheduler.step()
    if scheduler is not None and every == "epoch":
        scheduler.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in test)
    print(f"epoch {epoch + 1}: val_accuracy {correct / len(data.y_test):.4f}")
"""
# Installed in both sides as sitecustomize: the time of the first training step, into the file
# MLTRACK_FIRST_STEP names, marked when the framework is imported (by whichever code does).
FIRST_STEP = """
import importlib, importlib.abc, importlib.util, os, sys, time

def _mark(*args, **kwargs):
    path = os.environ.get("MLTRACK_FIRST_STEP")
    if path and not os.path.exists(path):
        with open(path, "w") as handle:
            handle.write(repr(time.time()))

def _patch(name, module):
    if name == "torch":
        importlib.import_module("torch.optim.optimizer").register_optimizer_step_pre_hook(_mark)
    else:
        import keras.callbacks
        begin = keras.callbacks.CallbackList.on_train_batch_begin
        def on_train_batch_begin(self, *args, **kwargs):
            _mark()
            return begin(self, *args, **kwargs)
        keras.callbacks.CallbackList.on_train_batch_begin = on_train_batch_begin

class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in ("keras", "torch"):
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            _patch(name, module)
        spec.loader.exec_module = exec_module
        return spec

if os.environ.get("MLTRACK_FIRST_STEP"):
    sys.meta_path.insert(0, _Hook())
"""

# Per framework: the bare script, the experiment module, the default --size, --epochs and
# --batch-size, and the arguments both sides add (torchvision's ResNet50 on a CPU takes about
# a second per batch of 128 at 32x32).
FRAMEWORKS: dict[str, tuple[str, str, tuple[int, int, int], tuple[str, ...]]] = {
    "keras": (BARE, "experiments.cifar_amp", (4096, 5, 256), ()),
    "torch": (BARE_TORCH, "experiments.cifar_torch", (1024, 2, 128), ("resnet50_torchvision",)),
}


@dataclass
class Sample:
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    first_step_s: float
    writer_cpu_s: float


def measure(command: list[str], cwd: Path, env: dict[str, str]) -> Sample:
    marks, report = cwd / "first-step", cwd / "writer.jsonl"
    marks.unlink(missing_ok=True)
    report.unlink(missing_ok=True)
    env = {**env, "MLTRACK_FIRST_STEP": str(marks), "MLTRACK_WRITER_REPORT": str(report)}
    spawned, start = time.time(), time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    proc.stderr.read()  # type: ignore[union-attr]  # EOF once the writer, too, has exited
    proc.stderr.close()  # type: ignore[union-attr]
    first = float(marks.read_text()) - spawned if marks.exists() else float("nan")
    writer = sum(json.loads(line)["cpu_s"] for line in report.read_text().splitlines()) if (
        report.exists()
    ) else 0.0  # fmt: skip
    # ru_maxrss of wait4 is the largest of the process and its waited-for children (KiB).
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(wall, cpu, usage.ru_maxrss / 1024, first, writer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=sorted(FRAMEWORKS), default="keras")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--size", type=int, default=0, help="synthetic training images")
    parser.add_argument("--epochs", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=0)
    args = parser.parse_args(argv)
    bare_script, module, defaults, model = FRAMEWORKS[args.framework]
    given = (args.size, args.epochs, args.batch_size)
    shape = [str(value or default) for value, default in zip(given, defaults, strict=True)]
    tracked = [
        *("-m", module, "--dataset", "synthetic", "--synthetic-size"),
        *(shape[0], "--epochs", shape[1], "--batch-size", shape[2]),
        *("--precision", "fp32", "--no-export"),
        *(("--model", *model) if model else ()),
    ]
    bare_name = f"bare {'Keras' if args.framework == 'keras' else 'PyTorch'}"
    with tempfile.TemporaryDirectory(prefix="mltrack-startup-") as tmp:
        cwd = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        (cwd / "site").mkdir()
        (cwd / "site" / "sitecustomize.py").write_text(FIRST_STEP)
        path = os.pathsep.join([str(cwd / "site"), str(ROOT)])
        env.update(PYTHONPATH=path, MLTRACK_SPOOL_DIR=str(cwd / "spool"))
        sides = {
            bare_name: [sys.executable, "-c", bare_script, *shape, *model],
            "mltrack": [sys.executable, *tracked],
        }
        # One unmeasured run of each: the store exists, as after a user's first run, and the
        # OS page cache holds both sides' libraries.
        for command in sides.values():
            measure(command, cwd, env)
        samples: dict[str, list[Sample]] = {name: [] for name in sides}
        for pair in range(args.pairs):
            order = list(sides) if pair % 2 == 0 else list(reversed(sides))
            for name in order:
                samples[name].append(measure(sides[name], cwd, env))
            bare, ours = samples[bare_name][-1], samples["mltrack"][-1]
            print(
                f"pair {pair + 1}: bare {bare.wall_s:.2f} s wall {bare.cpu_s:.2f} s CPU | "
                f"mltrack {ours.wall_s:.2f} s wall {ours.cpu_s:.2f} s CPU "
                f"(writer {ours.writer_cpu_s:.2f} s CPU)",
                flush=True,
            )
    report(bare_name, samples[bare_name], samples["mltrack"])
    return 0


def report(bare_name: str, bare: list[Sample], ours: list[Sample]) -> None:
    def med(xs: list[Sample], field: str) -> float:
        return statistics.median(getattr(x, field) for x in xs)

    print(f"\n{len(bare)} alternated pairs, whole processes (spawn to exit), medians:")
    print(f"| | {bare_name} | mltrack | ratio | difference |")
    print("|---|---|---|---|---|")
    rows = (
        ("wall_s", "wall s"),
        ("cpu_s", "CPU s (the training process's own)"),
        ("first_step_s", "spawn to first training step s"),
        ("max_rss_mb", "peak RSS MB"),
    )
    for field, label in rows:
        b, o = med(bare, field), med(ours, field)
        print(f"| {label} | {b:.2f} | {o:.2f} | {o / b:.3f}× | {o - b:+.2f} |")
    print(f"| writer process CPU s (beside) | — | {med(ours, 'writer_cpu_s'):.2f} | | |")
    diffs = sorted(o.wall_s - b.wall_s for b, o in zip(bare, ours, strict=True))
    print(f"\nper-pair wall differences (s): {', '.join(f'{d:+.2f}' for d in diffs)}")
    print("targets: wall ≤ 1.03× and ≤ +1.0 s, CPU ≤ 1.03×")


if __name__ == "__main__":
    raise SystemExit(main())
