"""mltrack for Hugging Face's ``transformers.Trainer``: a ``TrainerCallback`` feeding the ledger.

Like transformers' own ``MLflowCallback`` (``integrations/integration_utils.py``) it only
translates Trainer events into calls on ``mltrack.tracking.run.Run`` and
``mltrack.measure.ledger.Ledger``, so a Trainer run gets the per-epoch metrics of
``mltrack.torch.fit`` under the same definitions (``mltrack/measure/ledger.py``): ``train_wall_s``,
``val_wall_s``, ``epoch_wall_s``, ``samples_per_s``, epoch user/system CPU, ``peak_rss_mb``,
``achieved_tflops``/``mfu`` when the FLOPs per sample are given, ``loss`` and the evaluation's
``val_*``, ``optimizer_steps`` and ``learning_rate``, then the summary at step 0 (the loop's
``data_wait_s`` and ``compute_s`` need its internals).

Events and what they mean here (transformers 5.x, ``Trainer._run_epoch``; both strategies
``"epoch"``, which ``on_train_begin`` checks and warns about otherwise):

- ``on_epoch_begin``: the epoch's clock starts;
- ``on_epoch_end``: the training steps are over (``train_wall_s`` ends; the clock is read after
  ``torch.cuda.synchronize()`` on a GPU) and the evaluation begins;
- ``on_log``: the epoch's training ``loss`` (a NaN/Inf loss or gradient norm ends the run as
  ``diverged``: the Trainer leaves non-finite step losses out of its logged mean by default);
- ``on_evaluate``: the evaluation is over: the epoch's record goes to the run. An evaluation
  outside an epoch (``trainer.evaluate(...)`` after training) is left to the caller;
- ``on_train_end``: the summary.

What ran, not what was asked: ``TrainingArguments(fp16=True)`` on a CPU trains in fp32
(accelerate enables fp16 autocast only on accelerators), so the callback reads the autocast
state inside the first training forward pass (a forward pre-hook, removed after it fired) and
tags that as ``torch.precision_run``, beside ``torch.device``. The ``TrainingArguments`` are
logged as ``hf.*`` params (not the temporary folders). A logging failure is MLflow's to
journal (``mltrack.tracking.sink``); nothing here stops training but a NaN loss or a sweep's pruner.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from transformers import TrainerCallback

from mltrack.measure.ledger import Ledger
from mltrack.torch.loop import gpu_peak
from mltrack.tracking import distributed
from mltrack.tracking.run import Run

# What autocast ran, as mltrack's precision vocabulary names it.
AUTOCAST_PRECISION = {torch.float16: "mixed_fp16", torch.bfloat16: "mixed_bf16"}
PRECISION_DTYPE = {"fp32": "float32", "mixed_fp16": "float16", "mixed_bf16": "bfloat16"}
SKIPPED_EVAL_KEYS = ("runtime", "samples_per_second", "steps_per_second", "epoch")


def observed_precision(device: torch.device, parameter_dtype: torch.dtype) -> str:
    """The precision a forward pass runs in, read inside it."""
    if torch.is_autocast_enabled(device.type):
        return AUTOCAST_PRECISION.get(torch.get_autocast_dtype(device.type), "fp32")
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(parameter_dtype, "fp32")


def _has_weights(module: Any) -> bool:
    return not any(True for _ in module.children()) and any(
        True for _ in module.parameters(recurse=False)
    )


class MltrackCallback(TrainerCallback):
    """Per-epoch ledger and run metrics for a ``transformers.Trainer`` (see the module doc)."""

    def __init__(self, run: Run, flops_per_sample: float | None = None) -> None:
        self.run = run  # the run this training logs to: ``parent``, or a trial's child run
        self.parent = run
        self.flops_per_sample = flops_per_sample
        self.trainings = 0  # train() calls seen: a search's trials, or a reused callback
        self._child: Any = None  # the open child run's context manager
        self.children: list[tuple[str, str, float]] = []  # (run id, name, final val_loss)
        run.before_finish.append(self._close_child)  # a trial that raised leaves one open
        self.ledger = Ledger()
        self.device = torch.device("cpu")
        self.precision_run = ""
        self.epoch = -1  # the open epoch's index; -1 between epochs
        self.epochs_done = 0
        self.samples = 0
        self.loss = self.learning_rate = float("nan")
        self.record: dict[str, float] = {}  # the last epoch's, as logged
        self.summary: dict[str, float] = {}
        self._hook: Any = None

    # -- training --------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainings += 1
        if state.trial_params is not None or self.trainings > 1:
            self._open_child(state)
        if "mlflow" in (args.report_to or []) and self.run.is_rank_zero:
            warnings.warn(
                "TrainingArguments(report_to) includes 'mlflow': the Trainer's own "
                "MLflowCallback logs a second run beside mltrack's; pass report_to='none' to "
                "keep one",
                stacklevel=2,
            )
        if args.eval_strategy != "epoch" or args.logging_strategy != "epoch":
            warnings.warn(
                "MltrackCallback expects eval_strategy='epoch' and logging_strategy='epoch'; "
                "per-epoch validation timing and loss may be missing",
                stacklevel=2,
            )
        self.device = torch.device(args.device)
        self.ledger.gpu_peak_mb = gpu_peak(self.device)
        hidden = ("output_dir", "logging_dir")  # temporary folders, different every run
        params = {k: v for k, v in args.to_sanitized_dict().items() if k not in hidden}
        self.run.log_params({f"hf.{k}": v for k, v in params.items()})
        self.run.set_tags({"torch.device": str(self.device), "mltrack.trainer": "transformers"})
        if distributed.world().torch and args.world_size == 1 and self.run.is_rank_zero:
            warnings.warn(
                f"{distributed.world().size} processes were launched, but the Trainer trains "
                "a whole copy in each (accelerate found no GPU): on a CPU pass "
                "TrainingArguments(use_cpu=True) or set ACCELERATE_USE_CPU=1",
                stacklevel=2,
            )
        # A leaf with weights: accelerate enters autocast inside the model's own forward,
        # after the model's pre-hooks have run.
        model = kwargs.get("model")
        leaves = [] if model is None else [m for m in model.modules() if _has_weights(m)]
        if leaves:
            self._hook = leaves[0].register_forward_pre_hook(self._read_precision)
        self.ledger.begin()

    def _read_precision(self, module: Any, inputs: Any) -> None:
        if module.training and not self.precision_run:
            dtype = next(module.parameters()).dtype
            self.precision_run = observed_precision(self.device, dtype)
            self._hook.remove()

    def _open_child(self, state: Any) -> None:
        """A search's trial (``state.trial_params``), or a second ``train()`` with this
        callback: its own run, a child of the callback's run, with its own epochs from 0."""
        from mltrack.tracking.run import start_run

        self._close_child()
        name = state.trial_name or f"train-{self.trainings}"
        params = {f"trial.{k}": v for k, v in (state.trial_params or {}).items()}
        self._child = start_run("", run_name=name, parent=self.parent, params=params)
        self.run = self._child.__enter__()
        self.run.set_tags({"mltrack.trial": name, "mltrack.training": str(self.trainings)})
        self.ledger, self.precision_run, self.epochs_done = Ledger(), "", 0
        self.record, self.summary = {}, {}

    def _close_child(self, state: Any = None) -> None:
        """End the open child run: pruned when a search stopped it early (the Trainer calls
        on_train_end before raising optuna's TrialPruned), failed when its train() raised
        (no on_train_end came before the next train() or the parent's end)."""
        if self._child is None:
            return
        child, run, self._child = self._child, self.run, None
        self.run = self.parent
        if state is None:
            error = RuntimeError("its train() raised before the end of training")
            child.__exit__(RuntimeError, error, None)
            return
        searched = state.trial_params is not None
        if searched and not run.stopping and state.global_step < (state.max_steps or 0):
            run.stop("pruned", epoch=self.epochs_done - 1)
        child.__exit__(None, None, None)
        val_loss = self.record.get("val_loss", float("nan"))
        name = state.trial_name or f"train-{self.trainings}"
        self.children.append((run.run_id, name, val_loss))
        done = [c for c in self.children if math.isfinite(c[2])]
        if done:  # the default objective of hyperparameter_search: the evaluation loss
            best = min(done, key=lambda c: c[2])
            self.parent.set_tags({"best_trial_by_val_loss": best[1], "best_trial_run_id": best[0]})

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        loader = kwargs.get("train_dataloader")
        self.samples = len(loader.dataset) if loader is not None else 0
        # The Trainer's own count: a training resumed from a checkpoint goes on numbering.
        self.epoch = max(self.epochs_done, math.floor((state.epoch or 0) + 1e-6))
        self.loss = self.learning_rate = float("nan")
        self.ledger.start_epoch()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.ledger.start_validation()
        if self.epochs_done == 0:  # the first forward pass has shown what ran
            precision = self.precision_run or "fp32"
            self.run.set_tags({"precision": precision, "torch.precision_run": precision})
            if self.flops_per_sample and self.run.is_rank_zero:
                dtype = PRECISION_DTYPE.get(precision, "float32")
                ledger, tags = self.ledger, self.run.set_tags
                self.run.log_params(
                    ledger.measure_efficiency(self.flops_per_sample, dtype, "torch", tags)
                )

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any
    ) -> None:
        if self.epoch < 0 or not logs or "loss" not in logs:
            return
        self.loss = float(logs["loss"])
        self.learning_rate = float(logs.get("learning_rate", float("nan")))
        # The Trainer leaves NaN/Inf step losses out of its logged mean by default
        # (logging_nan_inf_filter): a NaN gradient norm then tells that the weights broke.
        broken = [k for k in ("loss", "grad_norm") if not math.isfinite(float(logs.get(k, 0.0)))]
        if broken:
            details = {"epoch": self.epoch, "step": state.global_step, broken[0]: logs[broken[0]]}
            self.run.stop("diverged", **details)
            control.should_training_stop = True

    def on_evaluate(
        self,
        args: Any,
        state: Any,
        control: Any,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.epoch < 0:  # an evaluation after training: the caller's
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.ledger.end_validation()
        record = self.ledger.end_epoch(self.samples)
        parallel = distributed.world().torch and args.world_size > 1
        if parallel:  # the job's record, from every rank's
            mine = self.samples // args.world_size  # the Trainer's sampler shards the epoch
            record = distributed.merge_epoch(record, mine, self.ledger)
        record["loss"] = self.loss
        record["optimizer_steps"] = float(state.global_step)  # as mltrack.torch.fit logs them
        if math.isfinite(self.learning_rate):
            record["learning_rate"] = self.learning_rate  # at the epoch's last step
        for key, value in (metrics or {}).items():
            name = key.removeprefix("eval_")
            if name not in SKIPPED_EVAL_KEYS and isinstance(value, int | float):
                record[f"val_{name}"] = float(value)
        self.run.end_epoch(self.epoch, record)
        self.record = record
        self.epoch, self.epochs_done = -1, self.epoch + 1
        # Diverged, or an epoch hook (a sweep's pruner) decided on rank 0: every rank stops.
        if distributed.decided_on_rank_zero(self.run.stopping) if parallel else self.run.stopping:
            control.should_training_stop = True
        if not self.run.is_rank_zero:
            return
        print(
            f"epoch {self.epochs_done}/{math.ceil(args.num_train_epochs)} - "
            f"{record['epoch_wall_s']:.1f}s - loss {self.loss:.4f} - val_loss "
            f"{record.get('val_loss', float('nan')):.4f} - val_accuracy "
            f"{record.get('val_accuracy', float('nan')):.4f}",
            flush=True,
        )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
        self.ledger.end()
        self.summary = self.ledger.summary()
        self.run.log_metrics(self.summary, step=0)
        self._close_child(state)
