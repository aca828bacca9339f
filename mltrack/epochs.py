"""Your own training loop, measured like mltrack's: the ledger around your epochs.

For a loop mltrack does not run (a custom PyTorch loop, JAX, anything), ``Epochs`` records
the same per-epoch metrics under the same definitions (``mltrack/measure/ledger.py``) as the Keras
callback, the PyTorch loop and the Trainer callback: ``train_wall_s`` (from ``begin_epoch`` to
``begin_validation``), ``val_wall_s``, ``epoch_wall_s``, ``samples_per_s``, user/system CPU,
``peak_rss_mb``, noise (``cpu_steal_s``, ``other_cpu_s``), ``achieved_tflops``/``mfu`` when the
FLOPs per training sample are given, then the summary (``total_wall_s``, ...) at step 0:

    with mltrack.start_run("my-experiment") as run:
        epochs = mltrack.Epochs(run, precision="fp32", flops_per_sample=None)
        for epoch in range(3):
            epochs.begin_epoch()
            ...                                   # train
            epochs.begin_validation()
            ...                                   # validate
            epochs.end_epoch(samples=50_000, metrics={"loss": loss, "val_accuracy": acc})
            if run.stopping:                      # a NaN loss, or a sweep's pruner
                break
        epochs.end()

On a GPU, pass ``sync`` (e.g. ``torch.cuda.synchronize``) so the clock is read after the
device finished, and ``gpu_peak_mb`` (a callable returning the peak MiB and resetting it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from mltrack.measure.ledger import Ledger
from mltrack.measure.precision import COMPUTE_DTYPE, CONCRETE
from mltrack.tracking.run import Run


class Epochs:
    """The per-epoch ledger of one run, driven by the caller's loop."""

    def __init__(
        self,
        run: Run,
        *,
        precision: str = "fp32",
        flops_per_sample: float | None = None,
        sync: Callable[[], None] | None = None,
        gpu_peak_mb: Callable[[], float | None] | None = None,
    ) -> None:
        """``precision``: what the loop computes in, from mltrack's vocabulary (``fp32``,
        ``mixed_bf16``, ...; tagged, and the dtype whose peak MFU divides by).
        ``flops_per_sample``: training FLOPs (forward + backward) of one sample, if known.
        ``ValueError`` for a precision outside the vocabulary."""
        if precision not in CONCRETE:
            raise ValueError(f"precision: got {precision!r}, expected one of {CONCRETE}")
        self.run = run
        self.sync = sync
        self.ledger = Ledger(gpu_peak_mb=gpu_peak_mb)
        self.epoch = -1
        run.set_tags({"precision": precision})
        if flops_per_sample:
            dtype = COMPUTE_DTYPE[precision]
            run.log_params(
                self.ledger.measure_efficiency(flops_per_sample, dtype, tags=run.set_tags)
            )
        self.ledger.begin()

    def _now(self) -> None:
        if self.sync is not None:
            self.sync()

    def begin_epoch(self) -> None:
        """The epoch's training starts now."""
        self._now()
        self.epoch += 1
        self.ledger.start_epoch()

    def begin_validation(self) -> None:
        """Training ends and validation starts now (skip it for an epoch without one)."""
        self._now()
        self.ledger.start_validation()

    def end_epoch(
        self, samples: int, metrics: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """The epoch is over: ``samples`` trained on, the caller's ``metrics`` (loss, val_*).

        Logs the epoch (step = its index) with the ledger's figures and returns them. A
        non-finite ``loss`` stops the run as ``diverged`` (``run.stopping`` turns true).
        """
        self._now()
        self.ledger.end_validation()
        record = {**(metrics or {}), **self.ledger.end_epoch(samples)}
        loss = record.get("loss")
        if loss is not None and not math.isfinite(loss):
            self.run.stop("diverged", epoch=self.epoch, loss=loss)
        self.run.end_epoch(self.epoch, record)
        return record

    def end(self) -> dict[str, float]:
        """Training is over: logs the summary (step 0) and returns it."""
        self.ledger.end()
        summary = self.ledger.summary()
        self.run.log_metrics(summary, step=0)
        return summary
