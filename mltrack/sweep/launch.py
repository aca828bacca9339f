"""A sweep's trial as a distributed job: ``mltrack sweep MODULE --nproc-per-node N``.

The worker (the process in the Optuna loop) suggests the trial's parameters as always, then
starts N processes on this machine through PyTorch's own launcher API
(``torch.distributed.launcher.api.elastic_launch``, what ``torchrun --standalone`` runs), each
calling the experiment's ``run_one`` with the trial's config. As under ``torchrun``, the job is
one run, owned by rank 0 (``mltrack.tracking.distributed``): rank 0 opens it under the study's
parent run and carries the trial's hook (``mltrack.sweep.trial``), so it reports each epoch to
Optuna and takes the pruner's decision, which every rank obeys (``decided_on_rank_zero``). Rank 0's
outcome and metrics come back to the worker, which ends the Optuna trial as for any trial.

Every rank loads the data itself (a rank is a fresh process). On a CPU each rank gets one
thread unless ``OMP_NUM_THREADS`` says otherwise, as ``torchrun`` does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mltrack.measure.precision import Resolved
from mltrack.sweep.args import SweepArgs
from mltrack.sweep.space import Objective

if TYPE_CHECKING:
    from mltrack.experiment import RunResult
    from mltrack.sweep.worker import Sweep


@dataclass(frozen=True)
class Job:
    """What every rank of a trial needs (pickled to the spawned processes)."""

    module: str
    cfg: Any
    resolved: Resolved
    parent_run_id: str
    tracking_uri: str
    study_name: str
    trial_id: int
    objectives: tuple[Objective, ...]
    args: SweepArgs
    reaped_note: str


def trial(sweep: Sweep, cfg: Any, resolved: Resolved, optuna_trial: Any) -> RunResult:
    """Run one trial as a job of ``--nproc-per-node`` processes; rank 0's result."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from mltrack.experiment import RunResult

    job = Job(
        sweep.args.module, cfg, resolved, sweep.parent.run_id if sweep.parent else "",
        sweep.tracking_uri, sweep.study_name, optuna_trial._trial_id,
        tuple(sweep.args.objectives), sweep.args, sweep._reaped_note(optuna_trial.number),
    )  # fmt: skip
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=sweep.args.nproc_per_node,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone
        max_restarts=0,  # a failed trial is Optuna's to retry, not the launcher's
        monitor_interval=0.5,
    )
    try:
        with _launcher_environment(sweep.args.nproc_per_node):
            results = elastic_launch(config, rank_main)(job)
    except ChildFailedError as exc:
        # Rank 0 ended the run FAILED (or KILLED) naming the rank; the launcher names it too.
        ranks = ", ".join(str(rank) for rank in sorted(exc.failures))
        return RunResult("", resolved.resolved, 0, "failed", {}, f"rank(s) {ranks} failed")
    outcome, error, metrics, run_id = results[0]
    return RunResult(run_id, resolved.resolved, 0, outcome, metrics, error)


@contextlib.contextmanager
def _launcher_environment(nproc: int) -> Iterator[None]:
    """One thread a rank unless the user chose (torchrun's default); and the worker's signal
    handlers back after the launcher's agent replaced them with its own."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads is None and nproc > 1:
        os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        for number, handler in saved.items():
            signal.signal(number, handler)


def rank_main(job: Job) -> tuple[str, str, dict[str, float], str] | None:
    """One rank of a trial (the launcher's entry point): rank 0 returns the run's outcome,
    error, metrics and id; the other ranks train without a run and print nothing."""
    import optuna

    from mltrack.config import quiet_frameworks
    from mltrack.sweep.args import load_experiment
    from mltrack.sweep.study import make_pruner, quiet_optuna
    from mltrack.sweep.trial import attach
    from mltrack.tracking import distributed
    from mltrack.tracking.run import Run

    experiment = load_experiment(job.module)
    quiet_frameworks(job.cfg.verbose, experiment.framework)
    quiet_optuna(job.cfg.verbose)
    if not distributed.world().is_rank_zero:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            experiment.run_one(job.cfg, job.resolved, experiment.load_data(job.cfg))
        return None
    data = experiment.load_data(job.cfg)
    study = optuna.load_study(
        study_name=job.study_name,
        storage=job.args.storage,
        pruner=make_pruner(job.args, job.cfg.epochs),
    )
    # The worker's trial, as stored: Optuna's Trial over the study and the trial's id.
    hook = attach(
        optuna.trial.Trial(study, job.trial_id), job.study_name, job.objectives, job.reaped_note
    )
    parent = Run.attach(job.parent_run_id, job.tracking_uri) if job.parent_run_id else None
    try:
        result = experiment.run_one(job.cfg, job.resolved, data, parent=parent, hooks=[hook])
    finally:
        if parent is not None:
            parent.detach()  # the study's parent is the worker's, and stays RUNNING
        sys.stdout.flush()
    return result.outcome, result.error, result.metrics, result.run_id
