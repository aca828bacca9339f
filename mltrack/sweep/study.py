"""Optuna's side of a sweep: storage, sampler, pruner, and what counts as a finished trial."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

from mltrack.errors import UsageError, bad_value
from mltrack.sweep.args import SweepArgs
from mltrack.sweep.space import SearchSpace
from mltrack.tracking.creation import open_once
from mltrack.tracking.limits import redact_uri, userinfo_problem
from mltrack.tracking.uris import sqlite_path


def open_storage(args: SweepArgs, on_stale: Any) -> Any:
    """Connect now, so an unreachable database is a usage error before anything is created."""
    import optuna

    if problem := userinfo_problem("--storage", args.storage):
        raise UsageError(problem)
    db = sqlite_path(args.storage)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs: dict[str, Any] = {}
    if args.storage.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    try:
        # Creating a new storage's tables is serialised between workers (mltrack.tracking.creation).
        return open_once(
            args.storage,
            lambda: optuna.storages.RDBStorage(
                args.storage,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=args.heartbeat_interval,
                grace_period=args.grace_period,
                heartbeat_stale_trial_callback=on_stale,
            ),
        )
    except UsageError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200]
        expected = f"a reachable database ({redact_uri(reason)})"
        if db is not None and "database is locked" in reason:
            expected = LOCKED
        raise bad_value("--storage", redact_uri(args.storage), expected) from exc


# sqlite locks the whole file while a process writes: one stopped in the middle of a write
# (Ctrl-Z, SIGSTOP, a frozen machine) keeps every other process out until it continues.
LOCKED = (
    "a sqlite file no other process holds locked (it still was after sqlite's 5 s wait: a "
    "worker stopped while writing keeps its lock until it continues; workers that may be "
    "stopped share PostgreSQL, which locks rows, not the database)"
)


def make_sampler(args: SweepArgs, space: SearchSpace) -> Any:
    import optuna

    if args.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=args.sampler_seed)
    if args.sampler == "random":
        return optuna.samplers.RandomSampler(seed=args.sampler_seed)
    if len(args.objectives) > 1:
        return optuna.samplers.TPESampler(seed=args.sampler_seed)
    return optuna.samplers.TPESampler(seed=args.sampler_seed, n_startup_trials=4)


def make_pruner(args: SweepArgs, epochs: int) -> Any:
    import optuna

    if args.pruner == "none" or len(args.objectives) > 1:  # Optuna prunes one objective only
        return optuna.pruners.NopPruner()
    if args.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def counted(trials: Sequence[Any]) -> int:
    """Trials that count towards --trials: finished, and neither a dead worker's (it is
    retried) nor one a stopped worker was interrupted in (``outcome`` killed: not a result)."""
    from optuna.trial import TrialState

    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and t.user_attrs.get("outcome", "killed") != "killed")
        for t in trials
    )


def quiet_optuna(verbose: bool) -> None:
    """Keep Optuna's messages the user cannot act on off the terminal unless ``--verbose``:
    its per-trial INFO lines and "failed with value nan" warnings (mltrack prints each trial's
    outcome itself), "There are no complete trials" from its plots, and the
    ``ExperimentalWarning`` of the heartbeat settings and ``fail_stale_trials`` (used
    knowingly: they are how workers tell a dead worker from a slow one)."""
    import optuna

    if verbose:
        return
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def refuse_a_changed_study(
    storage: Any, name: str, space: SearchSpace, objectives: Sequence[Any]
) -> None:
    """``keeps_its_definition`` for a study that exists already, before the worker loads its
    framework and data: the refusal of a changed --space-* or --objective comes in the
    second or two of opening the stores. Writes nothing; a new study is checked (and its
    definition stored) when the worker creates it."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # Optuna's "Record does not exist.": a new study
        return
    keeps_its_definition(study, name, space, objectives, record=False)


def keeps_its_definition(
    study: Any, name: str, space: SearchSpace, objectives: Sequence[Any], record: bool = True
) -> None:
    """A resumed or shared study must keep its search space and its objectives (Optuna
    cannot change them: values of another metric or direction would mix in one study): the
    first worker stores them in the study (``record``), the others compare; ``UsageError``
    on a change."""
    stored_space = dataclasses.asdict(space)
    stored_space["learning_rate"] = list(stored_space["learning_rate"] or []) or None
    if stored_space.get("compile") is None:  # studies from before --space-compile keep theirs
        stored_space.pop("compile", None)
    named = [f"{o.metric}:{o.direction.removesuffix('imize')}" for o in objectives]
    for flag_name, key, value in (
        ("--space-*", "search_space", stored_space),
        ("--objective", "objectives", named),
    ):
        stored = study.user_attrs.get(key)
        if stored is None:
            if record:
                study.set_user_attr(key, value)
        elif stored != value:
            raise bad_value(
                flag_name,
                value,
                f"what study {name!r} was created with, {stored}, or a new --study name",
            )
