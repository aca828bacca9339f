"""What a trial's run carries of its Optuna trial, wherever the run trains: in the worker's own
process, or on rank 0 of a distributed trial (``mltrack.sweep.launch``).

``attach(trial, ...)`` returns the hook ``run_one`` calls with the open run: the trial links to
the run (user attribute ``mlflow_run_id``), the run to the trial (tags ``optuna.study``,
``optuna.trial``, ``optuna.retry_of``), and each epoch reports the watched metric to Optuna,
whose pruner may stop the run (``pruned``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from mltrack.sweep.space import Objective
from mltrack.tracking.run import Run


def attach(
    trial: Any, study_name: str, objectives: Sequence[Objective], reaped_note: str
) -> Callable[[Run], None]:
    """The run hook of ``trial`` (an ``optuna.Trial``); ``reaped_note``: the stop reason when
    another worker failed the trial as stale meanwhile (Optuna then refuses reports)."""
    import optuna
    from optuna.trial import TrialState

    single = len(objectives) == 1
    watched = objectives[0].metric

    def hook(run: Run) -> None:
        trial.set_user_attr("mlflow_run_id", run.run_id)
        # Optuna 5's Trial has no system_attrs; the stored (frozen) trial does. Only running
        # trials are read: reading all of them costs more with every trial.
        running = trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        frozen = next(t for t in running if t.number == trial.number)
        retry_of = frozen.system_attrs.get("failed_trial")
        run.set_tags(
            {
                "optuna.study": study_name,
                "optuna.trial": trial.number,
                **({"optuna.retry_of": retry_of} if retry_of is not None else {}),
            }
        )

        def report(epoch: int, metrics: Any) -> None:
            if single and watched in metrics and math.isfinite(metrics[watched]):
                try:
                    trial.report(metrics[watched], epoch)
                except optuna.exceptions.UpdateFinishedTrialError:
                    run.stop("failed", reaped_note)
                    return
                if trial.should_prune():
                    run.stop("pruned", epoch=epoch)

        run.epoch_hooks.append(report)

    return hook
