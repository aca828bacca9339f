"""``mltrack sweep experiments.NAME [experiment flags]``: Optuna over any experiment module.

Each trial is one call of the experiment's own ``run_one`` (the same code path as a plain run),
so a trial is an ordinary MLflow run: a child of the study's parent run, opened when the trial
starts, with its per-epoch metrics, the trial number and study in tags. MLflow and Optuna agree
on how every trial ended:

| what happened                          | Optuna state  | MLflow status | ``outcome`` |
| -------------------------------------- | ------------- | ------------- | ----------- |
| trained to the end                     | COMPLETE      | FINISHED      | completed   |
| the pruner stopped it                  | PRUNED        | KILLED        | pruned      |
| the loss went NaN/Inf                  | FAIL          | FAILED        | diverged    |
| out of memory                          | FAIL          | FAILED        | infeasible  |
| any other error                        | FAIL          | FAILED        | failed      |
| its worker died (heartbeat went stale) | FAIL, retried | FAILED        | failed      |

The MLflow status comes from ``outcome`` through ``mltrack.tracking.run.STATUS``, the table every
run uses; the Optuna state from the same outcome in ``worker.Sweep.objective``. A FAIL never
becomes the best trial. Many workers join one study by running the same command
against one ``--storage`` (PostgreSQL); a worker killed mid-trial stops sending heartbeats, and
the next worker to look fails that trial and queues a retry with the same parameters
(``RetryHeartbeatStaleTrialCallback``). ``--trials N`` counts finished trials of the whole
study (COMPLETE, PRUNED, and FAILs that are not awaiting a retry), so a study that is resumed
or shared stops at N.

One concern per module: ``space`` (what is searched), ``args`` (the command line), ``study``
(Optuna storage, sampler, pruner), ``worker`` (trials), ``parent`` (the study's parent run).
"""

from mltrack.sweep.args import DEFAULT_STORAGE, SweepArgs, add_arguments, from_namespace
from mltrack.sweep.space import Objective, SearchSpace, read_space_file
from mltrack.sweep.study import counted
from mltrack.sweep.worker import Sweep

__all__ = [
    "DEFAULT_STORAGE",
    "Objective",
    "SearchSpace",
    "Sweep",
    "SweepArgs",
    "add_arguments",
    "counted",
    "from_namespace",
    "read_space_file",
]
