"""A sweep's parent run: one per study, shared by every worker, and what it says at the end
(the best trial or Pareto set, trial counts, Optuna's plots)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from mltrack.errors import UsageError
from mltrack.tracking.creation import creation_lock
from mltrack.tracking.limits import redact_uri
from mltrack.tracking.run import Run, start_run
from mltrack.tracking.spool import tag_run
from mltrack.tracking.warmup import STORES

log = logging.getLogger(__name__)


def same_store(study: Any, tracking_uri: str, parent_run_id: str) -> None:
    """A study resumed (or joined) against another MLflow store than it started in: one
    line, ``UsageError``, before any trial: its trials' runs would be split between stores,
    and its parent run is not in this one."""
    started = study.user_attrs.get("mlflow_tracking_uri")
    here = redact_uri(tracking_uri)
    if started is not None and started == here:
        return
    if started is None:  # a study from before the store was kept: ask the store
        try:
            STORES.client(tracking_uri).get_run(parent_run_id)
            return
        except Exception:
            started = "another store"
    raise UsageError(
        f"--tracking-uri: got {here}, expected the MLflow store study {study.study_name!r} "
        f"started in ({started}): its parent run and trials stay in one store; pass that "
        "--tracking-uri, or a new --study name"
    )


@contextlib.contextmanager
def shared_parent(
    study: Any,
    storage: str,
    experiment: str,
    name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    tracking_uri: str,
) -> Iterator[Run]:
    """The study's parent run: opened by the first worker, attached to by the others.

    Its id is kept in the study. Looking it up and creating it happen under the ``parent``
    lock of the study's ``storage`` (``mltrack.tracking.creation``), so workers started together
    still share one. The worker that opened it ends it through the run lifecycle (FAILED if that
    worker failed); any other worker brings it back to FINISHED when it ends normally, so the
    last worker to finish leaves its final state, and removes an ``error`` tag an earlier
    failure left, which is then no longer true.
    """
    STORES.client(tracking_uri)  # opened (created if new) before the lock: locks do not nest
    with contextlib.ExitStack() as owned:
        with creation_lock(storage, "parent"):
            existing = study.user_attrs.get("mlflow_parent_run_id")
            if existing:
                same_store(study, tracking_uri, existing)
            else:
                run = owned.enter_context(
                    start_run(
                        experiment,
                        run_name=name,
                        params=params,
                        tags=tags,
                        tracking_uri=tracking_uri,
                    )
                )
                study.set_user_attr("mlflow_parent_run_id", run.run_id)
                study.set_user_attr("mlflow_tracking_uri", redact_uri(tracking_uri))
        if not existing:
            yield run
            return
    experiment_id = STORES.client(tracking_uri).get_run(existing).info.experiment_id
    run = Run.attach(existing, tracking_uri, experiment_id)
    try:
        yield run
    except BaseException:
        run.detach()  # this worker's failure is not the study's
        raise
    run.finish()
    client = STORES.client(tracking_uri)
    if "error" in client.get_run(run.run_id).data.tags:
        client.delete_tag(run.run_id, "error")


def mark_best(parent: Run, study: Any) -> None:
    """Tag the parent with the best trial(s); tag every completed trial's run best or not.

    Only COMPLETE trials compete: a diverged, failed or pruned trial is never the best. With
    several workers each one marks at its end; the last to finish sees every trial.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    states = {
        s: sum(t.state == s for t in trials)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    parent.log_metrics({f"trials_{s.name.lower()}": float(n) for s, n in states.items()}, step=0)
    if not completed:
        parent.set_tags({"best_trial": "none"})
        return
    if len(study.directions) == 1:
        winners = [study.best_trial]
        best = winners[0]
        parent.set_tags(
            {
                "best_trial": best.number,
                "best_value": best.value,
                "best_run_id": best.user_attrs.get("mlflow_run_id", ""),
                **{f"best.{k}": v for k, v in best.params.items()},
            }
        )
    else:
        winners = list(study.best_trials)
        parent.set_tags(
            {
                "pareto_trials": ",".join(str(t.number) for t in winners),
                "pareto_run_ids": ",".join(t.user_attrs.get("mlflow_run_id", "") for t in winners),
            }
        )
    numbers = {t.number for t in winners}
    key = "optuna.best" if len(study.directions) == 1 else "optuna.pareto"
    for trial in completed:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            tag_run(parent.tracking_uri, run_id, {key: str(trial.number in numbers).lower()})


MIN_TRIALS_FOR_IMPORTANCE = 5


def log_importances(parent: Run, study: Any) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) as metrics ``importance.<param>`` on the parent,
    once five or more trials completed (fewer say nothing that holds); one objective only."""
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) != 1 or len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as exc:  # e.g. every completed trial had one value
        log.warning("parameter importances skipped: %s", exc)
        return {}
    values = {f"importance.{name}": float(value) for name, value in importances.items()}
    parent.log_metrics(values, step=0)
    return values


def log_plots(parent: Run, study: Any) -> None:
    """Optimization history, parameter importances and (two objectives) the Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    single = len(study.directions) == 1
    wanted: dict[str, Any] = {
        "optimization_history": (
            plots.plot_optimization_history
            if single
            else lambda s: plots.plot_optimization_history(
                s, target=lambda t: t.values[0], target_name="objective 0"
            )
        )
    }
    if single:
        wanted["param_importances"] = plots.plot_param_importances
    else:
        wanted["pareto_front"] = plots.plot_pareto_front
    for name, plot in wanted.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot(study)
        except Exception as exc:  # too few trials for importances, etc.: not a sweep failure
            log.warning("optuna plot %s skipped: %s", name, exc)
            parent.set_tags({f"plot_skipped.{name}": str(exc)[:200]})
            continue
        figure = getattr(axes, "figure", None) or axes.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        parent.log_figure(figure, f"optuna/{name}.png")
