"""Keras hooks: precision policies, a callback that feeds a run, and fit/evaluate helpers.

The callback only translates Keras events into calls on ``mltrack.tracking.run.Run``. It sets
``async_safe`` so that Keras (3.15+) dispatches its batch hooks on a worker thread: a batch hook
here appends to the sink's queue and never holds up the training step. Batch hooks exist only
on the subclass used for per-step logging or per-step divergence checks, because the mere
presence of ``on_train_batch_end`` makes Keras fetch every batch's logs.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import keras

from mltrack.errors import bad_value
from mltrack.keras.multi_worker import repair_fit
from mltrack.measure.ledger import Ledger
from mltrack.measure.metrics import binary_scores
from mltrack.measure.precision import KERAS_POLICY
from mltrack.tracking import distributed
from mltrack.tracking.resume import checkpoint_dir, mark_epoch
from mltrack.tracking.run import Run

ON_DIVERGENCE = ("stop", "continue")
WEIGHTS = "checkpoint.weights.h5"  # a resumable run's weights after its last epoch


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Build models under ``precision``'s Keras dtype policy; restore the previous one after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(KERAS_POLICY[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _floats(logs: Mapping[str, Any] | None) -> dict[str, float]:
    out = {}
    for key, value in (logs or {}).items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def dense_shapes(model: Any, samples: int | None, steps: int) -> list[tuple[int, int, int]]:
    """The matmuls (M, K, N) of the model's dense layers in a training step of the batch
    ``samples / steps``: forward (batch × in · in × out), weight gradient and input gradient;
    [] when the batch is not known. The peak calibration times these too (mltrack.measure.peaks)."""
    if not samples or not steps:
        return []
    batch = math.ceil(samples / steps)
    shapes = []
    for layer in model.layers:
        if type(layer).__name__ != "Dense":
            continue
        try:
            rows = batch * math.prod(tuple(layer.input.shape[1:-1]))
            k, n = int(layer.input.shape[-1]), int(layer.units)
        except (AttributeError, TypeError, ValueError):
            continue
        shapes += [(rows, k, n), (k, rows, n), (rows, n, k)]
    return sorted(set(shapes))[:12]


class Callback(keras.callbacks.Callback):
    """Per-epoch metrics (step = epoch), timings and resources into ``run``.

    ``samples_per_epoch``: the training samples one epoch feeds ``fit``. Under
    ``MultiWorkerMirroredStrategy`` (a ``TF_CONFIG`` naming several workers) every worker
    passes the same number: the batches Keras feeds are global, each split across the
    workers, so an epoch's samples are the job's, not one worker's share. Only the chief's
    run writes, and its ``samples_per_s`` is the job's throughput: the job's samples / the
    chief's ``train_wall_s``, neither multiplied by the world size (double-counted) nor one
    worker's share (under-counted); every step's all-reduce waits for the slowest worker, so
    the chief's time is the job's. Keras' ``loss`` and metrics are the means over all
    workers (``mltrack.keras.multi_worker``); CPU and memory are the chief's process alone.
    """

    async_safe = True

    def __init__(
        self, run: Run, *, samples_per_epoch: int | None = None, on_divergence: str = "stop"
    ) -> None:
        super().__init__()
        if on_divergence not in ON_DIVERGENCE:
            raise ValueError(f"on_divergence: got {on_divergence!r}, expected {ON_DIVERGENCE}")
        if distributed.world().launcher == "tf_config":  # before fit: Keras needs it at once
            repair_fit()
        self.run = run
        self.samples_per_epoch = samples_per_epoch
        self.on_divergence = on_divergence
        self.divergences: list[dict[str, Any]] = []  # non-finite losses seen: epoch, step, loss
        self.ledger = Ledger()
        self.epoch = 0
        self.last_epoch: dict[str, float] = {}
        self.summary: dict[str, float] = {}  # the ledger's, once training ended

    # Keras only knows the steps per epoch once fit() has started.
    @property
    def steps_per_epoch(self) -> int:
        return int(self.params.get("steps") or 0) if self.params else 0

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        from mltrack.measure.efficiency import keras_flops_per_sample

        # What really computes, read from the model (a user's own fit gets the tags too).
        self.run.set_tags(dtype_tags(self.model))
        flops = keras_flops_per_sample(self.model)  # once per model, from the layers' shapes
        compute = str(self.model.dtype_policy.compute_dtype)
        if self.run.is_rank_zero:  # the chief's peak: one calibration a machine and framework
            shapes = dense_shapes(self.model, self.samples_per_epoch, self.steps_per_epoch)
            found = self.ledger.measure_efficiency(
                flops, compute, "tensorflow", self.run.set_tags, shapes
            )
            self.run.log_params(found)
        self.ledger.begin()

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.epoch = epoch
        self.ledger.start_epoch()

    # Keras runs fit's validation pass through these two hooks (ledger: one timing model).
    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.ledger.start_validation()

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self.ledger.end_validation()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        metrics = _floats(logs)
        metrics.update(self.ledger.end_epoch(self.samples_per_epoch))
        metrics.update(self._loss_scale())
        loss = metrics.get("loss")
        if loss is not None and not math.isfinite(loss):
            # The epoch mean went NaN/Inf somewhere in this epoch; without batch hooks the
            # last step of the epoch is the most precise step we know.
            self._diverged(epoch, (epoch + 1) * max(self.steps_per_epoch, 1) - 1, loss)
        self.last_epoch = metrics
        if self.run.checkpoint and self.run.is_rank_zero:  # before the epoch is logged: a
            folder = checkpoint_dir(self.run.run_id)  # logged epoch is one --resume continues
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"tmp-{os.getpid()}.weights.h5"  # Keras wants the suffix
            self.model.save_weights(tmp)
            tmp.replace(folder / WEIGHTS)
            mark_epoch(self.run.run_id, epoch)
        self.run.end_epoch(epoch, metrics)
        if self.run.stopping:  # diverged, or an epoch hook (a sweep's pruner) decided to stop
            self.model.stop_training = True

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self.ledger.end()
        self.summary = self.ledger.summary()
        compiled = bool(getattr(self.model, "jit_compile", False))
        self.run.set_tags({"keras.jit_compile": str(compiled).lower()})
        walls = [e["train_wall_s"] for e in self.ledger.epochs]
        if compiled and len(walls) > 1:
            # XLA compiles in the first steps: the first epoch's excess over the steady mean
            # (tf.function's tracing, which every Keras run pays, is in it too). No batch hook.
            steady = sum(walls[1:]) / len(walls[1:])
            self.summary["compile_wall_s"] = max(0.0, walls[0] - steady)
            self.run.set_tags({"compile.in_epoch": "0"})
        self.run.log_metrics(self.summary, step=0)
        if self.divergences:  # trained on through NaN: the run diverged all the same
            first = min(self.divergences, key=lambda d: d["step"])
            self.run.stop("diverged", **first, trained_on="true")

    def _loss_scale(self) -> dict[str, float]:
        optimizer = getattr(self.model, "optimizer", None)
        scale = getattr(optimizer, "dynamic_scale", None)
        return {"loss_scale": float(scale.numpy())} if scale is not None else {}

    def _diverged(self, epoch: int, step: int, loss: float) -> None:
        if self.on_divergence == "continue":  # train every epoch on NaN, as seed 002 did
            # Seen by the batch thread and at the epoch's end alike: the earliest step wins.
            self.divergences.append({"epoch": epoch, "step": step, "loss": loss})
            return
        if self.run.stop("diverged", epoch=epoch, step=step, loss=loss):
            self.model.stop_training = True


class StepCallback(Callback):
    """Adds batch hooks: running batch metrics every N steps and exact divergence steps."""

    def __init__(
        self,
        run: Run,
        *,
        samples_per_epoch: int | None = None,
        log_every_n_steps: int = 0,
        on_divergence: str = "stop",
    ) -> None:
        super().__init__(run, samples_per_epoch=samples_per_epoch, on_divergence=on_divergence)
        self.log_every_n_steps = log_every_n_steps

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        step = self.epoch * self.steps_per_epoch + batch
        metrics = _floats(logs)
        loss = metrics.get("loss")
        if loss is not None and not math.isfinite(loss):
            self._diverged(self.epoch, step, loss)
        n = self.log_every_n_steps
        if n and step % n == 0:
            # Keras reports the epoch's running mean up to this batch.
            self.run.log_metrics({f"step/{k}": v for k, v in metrics.items()}, step)


class BinaryScores(keras.callbacks.Callback):
    """Adds precision, recall, F1, PR-AUC and ROC-AUC on validation data to each epoch's logs."""

    async_safe = True

    def __init__(self, x: Any, y: Any, prefix: str = "val_", batch_size: int = 4096) -> None:
        super().__init__()
        self.x, self.y, self.prefix, self.batch_size = x, y, prefix, batch_size

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        probability = self.model.predict(self.x, batch_size=self.batch_size, verbose=0)
        for key, value in binary_scores(self.y, probability).items():
            if key != "accuracy":  # Keras already reports val_accuracy
                logs[self.prefix + key] = value


def callback(
    run: Run,
    *,
    samples_per_epoch: int | None,
    log_every_n_steps: int = 0,
    watch_steps: bool = False,
    on_divergence: str = "stop",
) -> Callback:
    """The callback for a fit: with batch hooks only where they are needed (they make Keras
    fetch every batch's logs). ``on_divergence``: ``stop`` ends training at the first NaN/Inf
    loss; ``continue`` trains every epoch on and ends the run ``diverged`` with the first one."""
    if log_every_n_steps or watch_steps:
        return StepCallback(
            run,
            samples_per_epoch=samples_per_epoch,
            log_every_n_steps=log_every_n_steps,
            on_divergence=on_divergence,
        )
    return Callback(run, samples_per_epoch=samples_per_epoch, on_divergence=on_divergence)


class FlushAccumulation(keras.callbacks.Callback):
    """Apply the epoch's last, partial gradient-accumulation window, as the PyTorch loop does.

    Keras' ``gradient_accumulation_steps=k`` applies the summed gradients on every k-th
    global step only: windows run across epochs, and a window left open at the end of training
    never reaches the optimizer (k = 4 micro-batches over an 8-sample epoch at batch 4 trained
    nothing, issue 19). At each epoch's last training batch (before validation), a window of
    m < k micro-batches is applied here as Keras applies a full one (the mean of its m
    micro-batch gradients, then clipping, weight decay and the update), the accumulators are
    reset and the iteration counter moves to the next window, so every epoch starts a fresh
    window. Keras' private optimizer methods do it (``keras/src/optimizers/base_optimizer``,
    ``_backend_apply_gradients``), the same calls its own update makes. ``flushed`` counts the
    partial windows applied (logged as ``accumulation.flushed_windows``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.flushed = 0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        steps = self.params.get("steps")
        if steps is None or batch != steps - 1:
            return
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        k = optimizer.gradient_accumulation_steps
        open_ = int(optimizer._iterations.numpy()) % k
        if open_ == 0:
            return
        variables = optimizer._trainable_variables
        accumulated = [
            optimizer._accumulated_gradients[optimizer._get_variable_index(v)] for v in variables
        ]
        grads = [keras.ops.divide(g, open_) for g in accumulated]
        grads = optimizer._clip_gradients(grads)
        optimizer._apply_weight_decay(variables)
        optimizer._backend_update_step(grads, variables, optimizer.learning_rate)
        optimizer._backend_reset_gradient_accumulators()
        optimizer._iterations.assign_add(k - open_)
        self.flushed += 1


def dtype_tags(model: Any) -> dict[str, str]:
    """What the model really computes and stores in, read from its layers and variables, and
    its policy's name in mltrack's vocabulary (``precision``, for a user's own model)."""
    weighted = [layer for layer in model.layers if layer.weights]
    policy = str(model.dtype_policy.name)
    named = {v: k for k, v in KERAS_POLICY.items()}
    return {
        **({"precision": named[policy]} if policy in named else {}),
        "keras.dtype_policy": str(model.dtype_policy.name),
        "keras.compute_dtypes": ",".join(sorted({str(layer.compute_dtype) for layer in weighted})),
        "keras.hidden_compute_dtype": str(weighted[0].compute_dtype) if weighted else "",
        "keras.variable_dtypes": ",".join(sorted({str(v.dtype) for v in model.weights})),
    }


def progress_verbosity() -> int:
    """A progress bar on a terminal, one line per epoch in logs and CI."""
    return 1 if sys.stdout.isatty() else 2


def fit(
    run: Run,
    model: Any,
    x: Any,
    y: Any = None,
    *,
    epochs: int,
    batch_size: int | None = None,
    validation_data: Any = None,
    samples_per_epoch: int | None = None,
    log_every_n_steps: int = 0,
    watch_steps: bool = False,
    on_divergence: str = "stop",
    jit_compile: bool | None = None,
    **fit_kwargs: Any,
) -> dict[str, float]:
    """``model.fit`` with tracking; returns and logs the ledger summary (step 0).

    ``validation_data`` None: the timed fit validates nothing (evaluate after, untimed).
    ``jit_compile``: XLA on or off for this fit (None: as the model was compiled; Keras'
    "auto" is XLA on a GPU, off on a CPU); what ran is tagged ``keras.jit_compile``.
    """
    if jit_compile is not None:
        model.jit_compile = jit_compile  # read when fit makes its train function
    if run.first_epoch:  # resumed: the weights after its last epoch (the optimizer starts anew)
        weights = checkpoint_dir(run.run_id) / WEIGHTS
        if not weights.exists():
            raise bad_value("--resume", run.run_id, f"a run with a checkpoint (none at {weights})")
        model.load_weights(weights)
        fit_kwargs.setdefault("initial_epoch", run.first_epoch)
    if samples_per_epoch is None and hasattr(x, "__len__") and y is not None:
        samples_per_epoch = len(x)
    cb = callback(
        run,
        samples_per_epoch=samples_per_epoch,
        log_every_n_steps=log_every_n_steps,
        watch_steps=watch_steps,
        on_divergence=on_divergence,
    )
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    flush = FlushAccumulation() if getattr(optimizer, "gradient_accumulation_steps", 0) else None
    if flush is not None:
        fit_kwargs["callbacks"] = [*fit_kwargs.get("callbacks", []), flush]
    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation_data,
        # Ours last: Keras hands every callback the same logs dict, so metrics that other
        # callbacks add (BinaryScores) are logged too.
        callbacks=[*fit_kwargs.pop("callbacks", []), cb],
        # Progress on the chief alone: every worker of a multi-worker job trains the same steps.
        verbose=fit_kwargs.pop("verbose", progress_verbosity() if run.is_rank_zero else 0),
        **fit_kwargs,
    )
    if flush is not None:
        run.log_metrics({"accumulation_flushed_windows": float(flush.flushed)}, step=0)
    # The summary (logged at the end of training) and the last epoch's values (val_loss, ...).
    return {**cb.last_epoch, **cb.summary}


def evaluate(
    run: Run, model: Any, x: Any, y: Any = None, batch_size: int | None = None
) -> dict[str, float]:
    """Final test metrics, logged as ``test_<name>``."""
    results = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    metrics = {f"test_{k}": float(v) for k, v in results.items()}
    run.log_metrics(metrics, step=0)
    return metrics
