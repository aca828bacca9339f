"""``mltrack sweep``'s command line: its own flags, and the rest passed to the experiment."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from mltrack.config import flag
from mltrack.errors import bad_value
from mltrack.experiment import Experiment
from mltrack.sweep.space import Objective, SearchSpace

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
# Optuna's heartbeat: a worker writes one every HEARTBEAT_INTERVAL_S while a trial runs, and a
# trial whose last one is older than GRACE_PERIOD_S is failed and retried. The grace period
# outlasts a live worker starved of CPU for 30 s (its heartbeat thread cannot run then) plus
# one interval, with room to spare, on a 2-core machine running three workers
# (tests/test_sweep_runs.py stops one for 30 s).
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60


@dataclass
class SweepArgs:
    module: str
    passthrough: list[str]
    trials: int
    timeout: float | None
    study: str
    storage: str
    sampler: str
    pruner: str
    objectives: list[Objective]
    space: SearchSpace | None = None
    space_overrides: dict[str, Any] = field(default_factory=dict)
    space_file: str = ""
    sampler_seed: int | None = None
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S
    grace_period: int = GRACE_PERIOD_S
    max_retry: int = 2
    nproc_per_node: int = 1  # > 1: each trial a distributed job (mltrack.sweep.launch)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "module", help="experiment module, e.g. experiments.fashion_mnist_precision"
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=0,
        help="finished trials the study stops at (default 20; grid: its size)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds this worker runs")
    parser.add_argument("--study", default="", help="study name (default: the module's name)")
    parser.add_argument(
        "--storage",
        default="",
        help=f"Optuna storage (default: OPTUNA_STORAGE, as Optuna's CLI reads it, or "
        f"{DEFAULT_STORAGE}; postgresql://... to share one study among many workers; a URI "
        "with a password belongs in OPTUNA_STORAGE, not on a command line every user's ps shows)",
    )
    parser.add_argument("--sampler", choices=("tpe", "random", "grid"), default="tpe")
    parser.add_argument("--sampler-seed", type=int, default=None)
    parser.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median")
    parser.add_argument(
        "--objective",
        action="append",
        default=[],
        help="METRIC:max|min; twice for a Pareto front (default val_accuracy:max)",
    )
    parser.add_argument("--space", default="", help="YAML or TOML file with the search space")
    parser.add_argument("--space-precision", default="", help="comma list, e.g. fp32,mixed_bf16")
    parser.add_argument("--space-batch-size", default="", help="comma list, e.g. 32,64,128")
    parser.add_argument("--space-accumulation-steps", default="", help="comma list, e.g. 1,2,4")
    parser.add_argument("--space-learning-rate", default="", help="LOW:HIGH, log-uniform")
    parser.add_argument("--space-compile", default="", help="true,false: compiled or not")
    parser.add_argument(
        "--heartbeat-interval", type=int, default=HEARTBEAT_INTERVAL_S, help="seconds"
    )
    parser.add_argument(
        "--grace-period",
        type=int,
        default=GRACE_PERIOD_S,
        help="seconds without a heartbeat before a trial counts as dead",
    )
    parser.add_argument("--max-retry", type=int, default=2, help="retries of a dead worker's trial")
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="processes per trial: > 1 runs each trial as a distributed PyTorch job (DDP) "
        "through torch's launcher, one run per trial",
    )


def from_namespace(ns: argparse.Namespace, passthrough: list[str]) -> SweepArgs:
    overrides: dict[str, Any] = {}
    for name in ("precision", "batch_size", "accumulation_steps"):
        text = getattr(ns, f"space_{name}")
        if text:
            overrides[name] = [v.strip() for v in text.split(",") if v.strip()]
    if ns.space_learning_rate:
        overrides["learning_rate"] = ns.space_learning_rate.split(":")
    if ns.space_compile:
        overrides["compile"] = [v.strip() for v in ns.space_compile.split(",") if v.strip()]
    for name in ("trials", "heartbeat_interval", "grace_period", "max_retry"):
        if getattr(ns, name) < 0:
            raise bad_value(flag(name), getattr(ns, name), "an integer >= 0")
    if ns.nproc_per_node < 1:
        raise bad_value("--nproc-per-node", ns.nproc_per_node, "an integer >= 1")
    interval = ns.heartbeat_interval or HEARTBEAT_INTERVAL_S
    grace = ns.grace_period or GRACE_PERIOD_S
    if grace <= interval:
        # A live worker's trial would be failed as stale between two of its heartbeats.
        raise bad_value(
            "--grace-period", grace, f"more seconds than --heartbeat-interval ({interval})"
        )
    return SweepArgs(
        module=ns.module,
        passthrough=passthrough,
        trials=ns.trials,
        timeout=ns.timeout,
        study=ns.study,
        storage=ns.storage or os.environ.get("OPTUNA_STORAGE") or DEFAULT_STORAGE,
        sampler=ns.sampler,
        pruner=ns.pruner,
        objectives=[Objective.parse(o) for o in ns.objective or ["val_accuracy:max"]],
        space_overrides=overrides,
        space_file=ns.space,
        sampler_seed=ns.sampler_seed,
        heartbeat_interval=interval,
        grace_period=grace,
        max_retry=ns.max_retry,
        nproc_per_node=ns.nproc_per_node,
    )


def load_experiment(module: str) -> Experiment[Any, Any]:
    """The ``EXPERIMENT`` of ``module``, found as ``python -m`` finds it: from the working
    directory too (the ``mltrack`` script's own folder is first on its path, not the cwd)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        raise bad_value(
            "module",
            module,
            "an importable experiment module, e.g. experiments.fashion_mnist_precision",
        ) from exc
    experiment = getattr(loaded, "EXPERIMENT", None)
    if not isinstance(experiment, Experiment):
        raise bad_value("module", module, "a module defining EXPERIMENT = mltrack Experiment")
    return experiment
