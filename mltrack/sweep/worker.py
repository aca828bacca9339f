"""One sweep worker: joins the study, runs trials through the experiment's own ``run_one``,
and keeps Optuna and MLflow agreeing on how each trial ended."""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import socket
import time
from typing import Any

from mltrack.config import quiet_frameworks
from mltrack.errors import Terminated, UsageError
from mltrack.experiment import mltrack_command
from mltrack.measure.environment import detect_hardware
from mltrack.measure.precision import resolve
from mltrack.sweep import launch
from mltrack.sweep.args import SweepArgs, load_experiment
from mltrack.sweep.parent import log_importances, log_plots, mark_best, shared_parent
from mltrack.sweep.space import SearchSpace, read_space_file
from mltrack.sweep.study import (
    counted,
    keeps_its_definition,
    make_pruner,
    make_sampler,
    open_storage,
    quiet_optuna,
    refuse_a_changed_study,
)
from mltrack.sweep.trial import attach
from mltrack.tracking.limits import redact_uri
from mltrack.tracking.outcomes import describe, outcome_of
from mltrack.tracking.run import Run
from mltrack.tracking.spool import end_orphan
from mltrack.tracking.uris import resolve_tracking_uri
from mltrack.tracking.warmup import STORES


class Sweep:
    def __init__(self, args: SweepArgs) -> None:
        self.args = args
        self.experiment = load_experiment(args.module)
        if args.nproc_per_node > 1 and self.experiment.framework != "torch":
            raise UsageError(
                f"--nproc-per-node: got {args.nproc_per_node}, expected 1 for "
                f"{args.module} (a {self.experiment.framework} experiment; distributed trials "
                "are PyTorch jobs)"
            )
        self.cfg = self.experiment.parse(args.passthrough)
        self.cfg.for_sweep(args.passthrough)
        quiet_frameworks(self.cfg.verbose)  # before MLflow and Optuna load
        quiet_optuna(self.cfg.verbose)
        hardware = detect_hardware()
        space = SearchSpace.default(self.cfg, hardware)
        if args.space_file:
            space.update(read_space_file(args.space_file), "--space")
        space.update(args.space_overrides, "--space-*")
        space.validate(any(f.name == "learning_rate" for f in dataclasses.fields(self.cfg)))
        self.space = space
        self.sampler = make_sampler(args, space)  # grid + learning-rate errors, early
        if args.trials == 0:
            grid = space.grid() if args.sampler == "grid" else {}
            args.trials = math.prod(len(v) for v in grid.values()) if grid else 20
        self.study_name = args.study or self.experiment.name
        self.tracking_uri = resolve_tracking_uri(self.cfg.tracking_uri or None)
        # The MLflow store first: a deleted experiment leaves no Optuna study behind.
        STORES.open_existing(self.tracking_uri, self.cfg.experiment or self.experiment.name)
        self.storage = open_storage(args, self._on_stale)
        refuse_a_changed_study(self.storage, self.study_name, space, args.objectives)
        # The framework last: a store or study that refuses the sweep does so in a second or
        # two, not after TensorFlow's import (about 5 s of CPU).
        quiet_frameworks(self.cfg.verbose, self.experiment.framework)
        self.data = self.experiment.load_data(self.cfg)
        self.parent: Run | None = None
        self.interrupted: BaseException | None = None  # what stopped the worker mid-trial
        self.reaped: int | None = None  # this worker's trial, failed as stale by another
        # Optuna collects garbage after each trial (a trial's model must not stay in memory
        # for the next). The framework's modules and the data live as long as the worker:
        # frozen, the collector skips them, which made each collection 0.27 s -> milliseconds.
        gc.freeze()

    def _on_stale(self, study: Any, trial: Any) -> None:
        """A dead worker's trial: end its MLflow run FAILED with the reason, queue the retry."""
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            reason = "worker stopped sending heartbeats"
            end_orphan(self.tracking_uri, run_id, f"{reason} (trial {trial.number}, retried)")
        RetryHeartbeatStaleTrialCallback(max_retry=self.args.max_retry)(study, trial)

    def _end_orphans(self) -> None:
        """Runs of this experiment left RUNNING by dead processes end FAILED before we start."""
        from mltrack.tracking import doctor

        client = STORES.client(self.tracking_uri)
        ids = doctor.experiment_ids(client, self.cfg.experiment or self.experiment.name)
        orphans = doctor.find(client, ids, stale_after_s=max(self.args.grace_period * 3, 600))
        doctor.end(self.tracking_uri, orphans)
        for orphan in orphans:
            print(f"ended orphaned run {orphan.run_id}: {orphan.reason}", flush=True)

    def _parent_params(self) -> dict[str, Any]:
        return {
            "sweep.module": self.args.module,
            "sweep.sampler": self.args.sampler,
            "sweep.pruner": self.args.pruner,
            "sweep.trials": self.args.trials,
            "sweep.objectives": ", ".join(
                f"{o.metric}:{o.direction}" for o in self.args.objectives
            ),
            "sweep.space": dataclasses.asdict(self.space),
            "sweep.storage": self.args.storage,  # credentials redacted by mltrack.tracking.limits
            "sweep.passthrough": " ".join(self.args.passthrough),
        }

    def objective(self, trial: Any) -> Any:
        """One trial: an ordinary run of the experiment; its outcome decides Optuna's state."""
        import optuna

        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        cfg = dataclasses.replace(self.cfg, **self.space.suggest(trial))
        single, n = len(self.args.objectives) == 1, trial.number
        outcome, error, metrics = "completed", "", {}
        try:
            cfg.validate()
            resolved = resolve(cfg.precision, detect_hardware())
            hook = attach(trial, self.study_name, self.args.objectives, self._reaped_note(n))
            if self.args.nproc_per_node > 1:  # a distributed job through torch's launcher
                result = launch.trial(self, cfg, resolved, trial)
            else:
                result = self.experiment.run_one(
                    cfg, resolved, self.data, parent=self.parent, hooks=[hook]
                )
            outcome, error, metrics = result.outcome, result.error, result.metrics
        except UsageError as exc:
            outcome, error = "failed", str(exc)
        except Exception as exc:
            outcome, error = outcome_of(exc), describe(exc)
        except (KeyboardInterrupt, Terminated) as exc:
            # Ctrl-C or SIGTERM: the run ended KILLED on its way out; Optuna's trial ends too
            # (FAIL, outcome killed) rather than staying RUNNING until another worker's grace
            # period reaps and retries it. The loop re-raises once optimize has stored it.
            self.interrupted = exc
            outcome, error = "killed", type(exc).__name__
        missing = [o.metric for o in self.args.objectives if o.metric not in metrics]
        if outcome == "completed" and missing:
            outcome, error = "failed", f"objective metric(s) {missing} not reported by the run"
        try:
            trial.set_user_attr("outcome", outcome)
            if error:
                trial.set_user_attr("error", redact_uri(error)[:500])
        except optuna.exceptions.UpdateFinishedTrialError:
            # Optuna's tell refuses it too ("Cannot tell a FAIL trial"), and only raises that
            # cleanly after an objective that raised: _optimize_one says why in one line.
            self.reaped = trial.number
            raise
        # Optuna's state follows the outcome: completed COMPLETE, pruned PRUNED, else FAIL.
        if outcome == "pruned":
            raise optuna.TrialPruned()
        if outcome != "completed":
            return math.nan if single else tuple(math.nan for _ in self.args.objectives)
        scores = [metrics[o.metric] for o in self.args.objectives]
        return scores[0] if single else tuple(scores)

    def run(self) -> Any:
        import optuna

        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            load_if_exists=True,
            sampler=self.sampler,
            pruner=make_pruner(self.args, self.cfg.epochs),
            directions=[o.direction for o in self.args.objectives],
        )
        keeps_its_definition(study, self.study_name, self.space, self.args.objectives)
        self._end_orphans()
        deadline = None if self.args.timeout is None else time.monotonic() + self.args.timeout
        with shared_parent(
            study,
            self.args.storage,
            self.cfg.experiment or self.experiment.name,
            f"sweep {self.study_name}",
            self._parent_params(),
            {
                "mltrack.role": "study",
                "optuna.study": self.study_name,
                "mltrack.module": self.args.module,
            },
            self.tracking_uri,
        ) as parent:
            self.parent = parent
            self._loop(study, deadline)
            mark_best(parent, study)
            log_importances(parent, study)
            log_plots(parent, study)
        return study

    def _loop(self, study: Any, deadline: float | None) -> None:
        from optuna.storages import fail_stale_trials

        checked = -math.inf
        while deadline is None or time.monotonic() < deadline:
            # A dead worker's trial goes stale after the grace period: looking for one more
            # often than every heartbeat interval finds nothing new and costs a query per trial.
            if time.monotonic() - checked >= self.args.heartbeat_interval:
                fail_stale_trials(study)
                checked = time.monotonic()
            trials = study.get_trials(deepcopy=False)
            done = counted(trials)
            if done >= self.args.trials:
                break
            active = sum(t.state.name in ("RUNNING", "WAITING") for t in trials)
            if done + active >= self.args.trials and not any(
                t.state.name == "WAITING" for t in trials
            ):
                time.sleep(1)  # others are finishing the last trials; watch for dead ones
                continue
            if self.args.sampler == "grid" and self.sampler.is_exhausted(study):
                break
            self._optimize_one(study)
            if self.interrupted is not None:
                raise self.interrupted

    def _optimize_one(self, study: Any) -> None:
        """One trial through Optuna. A trial another worker failed as stale while this one ran
        it (this worker was starved of CPU for longer than the grace period) cannot be told:
        Optuna raises "Cannot tell a FAIL trial"; it is said in one line and the loop goes on
        (the other worker queued its retry)."""
        try:
            study.optimize(
                self.objective, n_trials=1, gc_after_trial=True, callbacks=[self.print_progress]
            )
        except ValueError:
            if self.reaped is None:
                raise
            print(self._reaped_note(self.reaped), flush=True)
        finally:
            self.reaped = None

    def _reaped_note(self, number: int) -> str:
        return (
            f"trial {number} was failed as stale by another worker (this worker sent no "
            f"heartbeat for over --grace-period {self.args.grace_period:g}s: starved of CPU); "
            "its retry runs it again"
        )

    def summary(self, study: Any) -> str:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        lines = [
            f"study {self.study_name}: {len(trials)} trials, "
            + ", ".join(
                f"{s.name.lower()} {sum(t.state == s for t in trials)}"
                for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            )
        ]
        if any(t.state == TrialState.COMPLETE for t in trials):
            if len(study.directions) == 1:
                best = study.best_trial
                lines.append(f"best: trial {best.number} value {best.value:.4g} {best.params}")
            else:
                lines.append(f"Pareto front: trials {[t.number for t in study.best_trials]}")
        parent = self.parent.run_id if self.parent else "?"
        where = redact_uri(self.tracking_uri)
        lines.append(f"parent run {parent} in {where}; browse with: {mltrack_command()} ui")
        return "\n".join(lines)

    def print_progress(self, study: Any, last: Any) -> None:
        """Optuna's callback after each trial of this worker, with the trial as stored."""
        print(
            f"trial {last.number}: {last.state.name.lower()} "
            f"({last.user_attrs.get('outcome', '')}) params {last.params} value {last.values}",
            flush=True,
        )
