"""Tracking overhead: the same model on the same data, bare Keras vs mltrack, in one process.

    python -m benchmarks.overhead                   # about 4 minutes here
    python -m benchmarks.overhead --reps 12 --epochs 3

Two measurements, because wall time on a shared 2-core VM varies by ±25% between identical
fits, far more than the 1% being measured:

1. **A/B**: variants alternate (bare, per-epoch, per-step, bare, ...) so drift hits all alike.
   Each fit builds a fresh model; the timed region is ``model.fit`` alone (data already in
   memory; model building, run creation and export are outside it and reported apart). Reported:
   median wall and CPU seconds, and the ratio of medians with a bootstrap 95% interval, which
   says how small an overhead this machine can resolve at all.
2. **Accounting**: the CPU seconds spent in mltrack's own code during the fit, measured
   directly: every callback hook (``time.thread_time`` on whichever thread Keras runs it) plus
   the sink's writer thread. Divided by the bare fit's CPU seconds this is the share of the
   machine that tracking takes, independent of noise from other tenants.

Targets (issue 2): at most 1% with per-epoch logging, at most 3% with per-step logging.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.cifar_amp import build_model
from mltrack.studies.data import synthetic
from mltrack.tracking.run import start_run

HOOKS = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end", "on_train_batch_end")


def instrument(callback: Any) -> list[float]:
    """Wrap the hooks mltrack overrides to add up the CPU seconds they spend; return the counter.

    Hooks left at Keras' no-op default stay unwrapped: wrapping one would add a call per batch
    that the real callback does not make.
    """
    import keras

    spent = [0.0]
    for name in HOOKS:
        if getattr(type(callback), name) is getattr(keras.callbacks.Callback, name):
            continue
        original = getattr(callback, name)

        def timed(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> None:
            start = time.thread_time()
            try:
                _original(*args, **kwargs)
            finally:
                spent[0] += time.thread_time() - start

        setattr(callback, name, timed)
    return spent


def ratio_interval(a: list[float], b: list[float], draws: int = 2000) -> tuple[float, float]:
    """Bootstrap 95% interval of median(a) / median(b)."""
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(rng.choices(a, k=len(a))) / statistics.median(rng.choices(b, k=len(b)))
        for _ in range(draws)
    )
    return ratios[int(0.025 * draws)], ratios[int(0.975 * draws)]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    import keras

    from mltrack import keras as mk

    data = synthetic.images((32, 32, 3), 10, args.samples, 512, seed=0)
    store = f"sqlite:///{Path(tempfile.mkdtemp()) / 'mlflow.db'}"

    def fit(callbacks: list[Any]) -> tuple[float, float]:
        keras.utils.set_random_seed(0)
        with mk.precision_policy(args.precision):
            model = build_model("cnn", args.precision, 10)
            model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(
            data.x_train,
            data.y_train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_data=(data.x_test, data.y_test),
            verbose=0,
            callbacks=callbacks,
        )
        return time.perf_counter() - wall, time.process_time() - cpu

    setup: list[float] = []
    own_cpu: dict[str, list[float]] = {"per-epoch": [], "per-step": []}

    def tracked(name: str, every: int) -> Callable[[], tuple[float, float]]:
        def go() -> tuple[float, float]:
            opened = time.perf_counter()
            with start_run("overhead", tracking_uri=store) as run:
                setup.append(time.perf_counter() - opened)
                cb = mk.callback(run, samples_per_epoch=args.samples, log_every_n_steps=every)
                hooks = instrument(cb)
                result = fit([cb])
                run.flush()
                own_cpu[name].append(hooks[0] + run.sink.writer_cpu_s)
            return result

        return go

    variants: dict[str, Callable[[], tuple[float, float]]] = {
        "bare": lambda: fit([]),
        "per-epoch": tracked("per-epoch", 0),
        "per-step": tracked("per-step", 1),
    }
    fit([])  # warm caches and kernels once, untimed
    wall: dict[str, list[float]] = {n: [] for n in variants}
    cpu: dict[str, list[float]] = {n: [] for n in variants}
    for rep in range(args.reps):
        for name, fn in variants.items():
            w, c = fn()
            wall[name].append(w)
            cpu[name].append(c)
        print(
            f"rep {rep + 1}/{args.reps}: "
            + ", ".join(f"{n} {wall[n][-1]:.2f}s wall/{cpu[n][-1]:.2f}s cpu" for n in variants),
            flush=True,
        )

    steps = args.epochs * -(-args.samples // args.batch_size)
    print(
        f"\n{args.samples} samples × {args.epochs} epochs, batch {args.batch_size} "
        f"({steps} steps), {args.precision}, {args.reps} reps, validation each epoch\n"
    )
    print("A/B (median over reps; interval: bootstrap 95% of the ratio to bare):")
    print("| variant | wall s | wall ratio [95%] | cpu s | cpu ratio [95%] |")
    print("|---|---|---|---|---|")
    for name in variants:
        wl, wh = ratio_interval(wall[name], wall["bare"])
        cl, ch = ratio_interval(cpu[name], cpu["bare"])
        print(
            f"| {name} | {statistics.median(wall[name]):.2f} | "
            f"{statistics.median(wall[name]) / statistics.median(wall['bare']) - 1:+.1%} "
            f"[{wl - 1:+.1%}, {wh - 1:+.1%}] | {statistics.median(cpu[name]):.2f} | "
            f"{statistics.median(cpu[name]) / statistics.median(cpu['bare']) - 1:+.1%} "
            f"[{cl - 1:+.1%}, {ch - 1:+.1%}] |"
        )
    bare_cpu = statistics.median(cpu["bare"])
    print("\nAccounting (CPU seconds in mltrack's hooks and sink writer, per fit):")
    print("| variant | mltrack cpu s | share of bare fit cpu |\n|---|---|---|")
    for name, values in own_cpu.items():
        print(
            f"| {name} | {statistics.median(values):.4f} | "
            f"{statistics.median(values) / bare_cpu:.3%} |"
        )
    print(
        f"\nrun open (create run, tags, params), outside the timed fit: "
        f"median {statistics.median(setup) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
