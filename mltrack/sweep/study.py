"""Optuna's side of a sweep: storage, sampler, pruner, and what counts as a finished trial."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mltrack.creation import open_once
from mltrack.errors import UsageError, bad_value
from mltrack.limits import redact_uri
from mltrack.sweep.args import SweepArgs
from mltrack.sweep.space import SearchSpace
from mltrack.uris import sqlite_path


def open_storage(args: SweepArgs, on_stale: Any) -> Any:
    """Connect now, so an unreachable database is a usage error before anything is created."""
    import optuna

    db = sqlite_path(args.storage)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs: dict[str, Any] = {}
    if args.storage.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    try:
        # Creating a new storage's tables is serialised between workers (mltrack.creation).
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
        raise bad_value(
            "--storage", redact_uri(args.storage), f"a reachable database ({redact_uri(reason)})"
        ) from exc


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
