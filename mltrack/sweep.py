"""``mltrack sweep experiments.NAME [experiment flags]``: Optuna over any experiment module.

Each trial is one call of the experiment's own ``run_one`` (the same code path as a plain run),
so a trial is an ordinary MLflow run: a child of the study's parent run, opened when the trial
starts, with its per-epoch metrics, the trial number and study in tags. MLflow and Optuna agree
on how every trial ended:

=======================================  ===============  ====================  =============
what happened                            Optuna state     MLflow status         ``outcome``
=======================================  ===============  ====================  =============
trained to the end                       COMPLETE         FINISHED              completed
the pruner stopped it                    PRUNED           KILLED                pruned
the loss went NaN/Inf                    FAIL             FAILED                diverged
out of memory                            FAIL             FAILED                infeasible
any other error                          FAIL             FAILED                failed
its worker died (heartbeat went stale)   FAIL, retried    FAILED                failed
=======================================  ===============  ====================  =============

A FAIL never becomes the best trial. Many workers join one study by running the same command
against one ``--storage`` (PostgreSQL); a worker killed mid-trial stops sending heartbeats, and
the next worker to look fails that trial and queues a retry with the same parameters
(``RetryHeartbeatStaleTrialCallback``). ``--trials N`` counts finished trials of the whole
study (COMPLETE, PRUNED, and FAILs that are not awaiting a retry), so a study that is resumed
or shared stops at N.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import math
import os
import socket
import time
import tomllib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltrack.config import ExperimentConfig, flag
from mltrack.environment import Hardware, detect_hardware
from mltrack.errors import UsageError, bad_value
from mltrack.experiment import Experiment
from mltrack.precision import CONCRETE, resolve
from mltrack.run import Run, RunDiverged, RunPruned, resolve_tracking_uri, sqlite_path

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
OOM_ERRORS = ("OutOfMemoryError", "ResourceExhaustedError", "MemoryError")


# -- the search space ---------------------------------------------------------------------


@dataclass
class SearchSpace:
    precision: list[str]
    batch_size: list[int]
    accumulation_steps: list[int]
    learning_rate: tuple[float, float] | None = None  # log-uniform range

    @classmethod
    def default(cls, cfg: ExperimentConfig, hardware: Hardware) -> SearchSpace:
        """Precisions this hardware runs fast, batch sizes around the experiment's default."""
        precisions = ["fp32"]
        fast = resolve("auto", hardware).resolved
        if fast != "fp32":
            precisions.append(fast)
        if any(g.compute_capability >= (8, 0) for g in hardware.gpus):
            precisions.append("mixed_fp16")
        b = cfg.batch_size
        return cls(precisions, sorted({max(b // 2, 1), b, b * 2}), [1, 2, 4])

    def validate(self, has_learning_rate: bool) -> None:
        if not self.precision:
            raise bad_value("--space-precision", "", f"one or more of {', '.join(CONCRETE)}")
        for p in self.precision:
            if p not in CONCRETE:
                raise bad_value("--space-precision", p, f"one of {', '.join(CONCRETE)}")
        for name, values in (
            ("--space-batch-size", self.batch_size),
            ("--space-accumulation-steps", self.accumulation_steps),
        ):
            if not values:
                raise bad_value(name, "", "one or more integers >= 1")
            for v in values:
                if v < 1:
                    raise bad_value(name, v, "integers >= 1")
        if self.learning_rate is not None:
            low, high = self.learning_rate
            if not 0 < low < high:
                raise bad_value(
                    "--space-learning-rate", f"{low}:{high}", "LOW:HIGH with 0 < LOW < HIGH"
                )
            if not has_learning_rate:
                raise bad_value(
                    "--space-learning-rate",
                    f"{low}:{high}",
                    "no range: this experiment has no --learning-rate",
                )

    def suggest(self, trial: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "precision": trial.suggest_categorical("precision", self.precision),
            "batch_size": trial.suggest_categorical("batch_size", self.batch_size),
            "accumulation_steps": trial.suggest_categorical(
                "accumulation_steps", self.accumulation_steps
            ),
        }
        if self.learning_rate is not None:
            values["learning_rate"] = trial.suggest_float(
                "learning_rate", *self.learning_rate, log=True
            )
        return values

    def grid(self) -> dict[str, list[Any]]:
        if self.learning_rate is not None:
            raise bad_value("--sampler", "grid", "tpe or random with a --space-learning-rate range")
        return {
            "precision": self.precision,
            "batch_size": self.batch_size,
            "accumulation_steps": self.accumulation_steps,
        }

    def update(self, values: dict[str, Any], where: str) -> None:
        """Override from a YAML/TOML mapping or from command-line lists."""
        for key, value in values.items():
            name = key.replace("-", "_")
            if name == "learning_rate":
                if isinstance(value, dict):
                    value = (value.get("low"), value.get("high"))
                try:
                    low, high = (float(v) for v in value)
                except (TypeError, ValueError):
                    raise bad_value(where, value, "learning_rate as [low, high]") from None
                self.learning_rate = (low, high)
            elif name in ("precision", "batch_size", "accumulation_steps"):
                items = value if isinstance(value, list) else [value]
                try:
                    setattr(self, name, [str(v) if name == "precision" else int(v) for v in items])
                except ValueError:
                    raise bad_value(where, value, f"a list for {name}") from None
            else:
                raise bad_value(
                    where, key, "precision, batch_size, accumulation_steps or learning_rate"
                )


def read_space_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise bad_value("--space", path, "a readable YAML or TOML file") from exc
    try:
        if path.endswith(".toml"):
            data: Any = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise bad_value("--space", path, f"valid YAML/TOML ({exc})") from exc
    if not isinstance(data, dict):
        raise bad_value("--space", path, "a mapping of parameter names to values")
    return data


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "maximize" | "minimize"

    @classmethod
    def parse(cls, text: str) -> Objective:
        metric, _, way = text.partition(":")
        directions = {
            "max": "maximize",
            "min": "minimize",
            "maximize": "maximize",
            "minimize": "minimize",
        }
        if not metric or way not in directions:
            raise bad_value("--objective", text, "METRIC:max or METRIC:min, e.g. val_accuracy:max")
        return cls(metric, directions[way])


# -- command line ---------------------------------------------------------------------------


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
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2


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
        help=f"Optuna storage (default {DEFAULT_STORAGE}; postgresql://... to "
        "share one study among many workers)",
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
    parser.add_argument("--heartbeat-interval", type=int, default=10, help="seconds")
    parser.add_argument(
        "--grace-period",
        type=int,
        default=30,
        help="seconds without a heartbeat before a trial counts as dead",
    )
    parser.add_argument("--max-retry", type=int, default=2, help="retries of a dead worker's trial")


def from_namespace(ns: argparse.Namespace, passthrough: list[str]) -> SweepArgs:
    overrides: dict[str, Any] = {}
    for name in ("precision", "batch_size", "accumulation_steps"):
        text = getattr(ns, f"space_{name}")
        if text:
            overrides[name] = [v.strip() for v in text.split(",") if v.strip()]
    if ns.space_learning_rate:
        overrides["learning_rate"] = ns.space_learning_rate.split(":")
    for name in ("trials", "heartbeat_interval", "grace_period", "max_retry"):
        if getattr(ns, name) < 0:
            raise bad_value(flag(name), getattr(ns, name), "an integer >= 0")
    return SweepArgs(
        module=ns.module,
        passthrough=passthrough,
        trials=ns.trials,
        timeout=ns.timeout,
        study=ns.study,
        storage=ns.storage or DEFAULT_STORAGE,
        sampler=ns.sampler,
        pruner=ns.pruner,
        objectives=[Objective.parse(o) for o in ns.objective or ["val_accuracy:max"]],
        space_overrides=overrides,
        space_file=ns.space,
        sampler_seed=ns.sampler_seed,
        heartbeat_interval=ns.heartbeat_interval or 10,
        grace_period=ns.grace_period or 30,
        max_retry=ns.max_retry,
    )


def load_experiment(module: str) -> Experiment[Any, Any]:
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


# -- storage and study ----------------------------------------------------------------------


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
        return optuna.storages.RDBStorage(
            args.storage,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=args.heartbeat_interval,
            grace_period=args.grace_period,
            heartbeat_stale_trial_callback=on_stale,
        )
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200]
        raise bad_value("--storage", args.storage, f"a reachable database ({reason})") from exc


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
    """Trials that count towards --trials: finished, and not a dead worker's (it is retried)."""
    from optuna.trial import TrialState

    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and "outcome" in t.user_attrs)
        for t in trials
    )


# -- the sweep ------------------------------------------------------------------------------


class Sweep:
    def __init__(self, args: SweepArgs) -> None:
        self.args = args
        self.experiment = load_experiment(args.module)
        self.cfg = self.experiment.parse(args.passthrough)
        hardware = detect_hardware()
        space = SearchSpace.default(self.cfg, hardware)
        if args.space_file:
            space.update(read_space_file(args.space_file), "--space")
        space.update(args.space_overrides, "--space-*")
        space.validate(any(f.name == "learning_rate" for f in dataclasses.fields(self.cfg)))
        self.space = space
        self.sampler_check = make_sampler(args, space)  # grid + learning-rate errors, early
        if args.trials == 0:
            grid = space.grid() if args.sampler == "grid" else {}
            args.trials = math.prod(len(v) for v in grid.values()) if grid else 20
        self.study_name = args.study or self.experiment.name
        self.tracking_uri = resolve_tracking_uri(self.cfg.tracking_uri or None)
        self.storage = open_storage(args, self._on_stale)
        self.data = self.experiment.load_data(self.cfg)
        self.parent: Run | None = None
        self.owns_parent = False  # this worker created the parent run (and so ends it)
        self._exit = contextlib.ExitStack()

    # A dead worker's trial: end its MLflow run as FAILED, then queue the retry.
    def _on_stale(self, study: Any, trial: Any) -> None:
        from mlflow import MlflowClient
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            client = MlflowClient(tracking_uri=self.tracking_uri)
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, "outcome", "failed")
                client.set_tag(
                    run_id,
                    "error",
                    "worker stopped sending heartbeats "
                    f"(trial {trial.number} failed by Optuna, retried)",
                )
                client.set_terminated(run_id, "FAILED")
        RetryHeartbeatStaleTrialCallback(max_retry=self.args.max_retry)(study, trial)

    def _end_orphans(self) -> None:
        """Runs of this experiment left RUNNING by dead processes end FAILED before we start."""
        from mlflow import MlflowClient

        from mltrack import doctor

        client = MlflowClient(tracking_uri=self.tracking_uri)
        ids = doctor.experiment_ids(client, self.cfg.experiment or self.experiment.name)
        orphans = doctor.find(client, ids, stale_after_s=max(self.args.grace_period * 3, 600))
        doctor.end(client, orphans)
        for orphan in orphans:
            print(f"ended orphaned run {orphan.run_id}: {orphan.reason}", flush=True)

    def _check_space(self, study: Any) -> None:
        """A resumed or shared study must keep its search space (Optuna cannot change it)."""
        space = dataclasses.asdict(self.space)
        space["learning_rate"] = list(space["learning_rate"] or []) or None
        stored = study.user_attrs.get("search_space")
        if stored is None:
            study.set_user_attr("search_space", space)
        elif stored != space:
            raise bad_value(
                "--space-*",
                space,
                f"the space study {self.study_name!r} was "
                f"created with, {stored}, or a new --study name",
            )

    def _open_parent(self, study: Any) -> Run:
        """One parent run per study, shared by every worker (its id kept in the study)."""
        from mltrack.run import start_run

        existing = study.user_attrs.get("mlflow_parent_run_id")
        if existing:
            return Run.attach(existing, self.tracking_uri)
        run = self._exit.enter_context(
            start_run(
                self.cfg.experiment or self.experiment.name,
                run_name=f"sweep {self.study_name}",
                params={
                    "sweep.module": self.args.module,
                    "sweep.sampler": self.args.sampler,
                    "sweep.pruner": self.args.pruner,
                    "sweep.trials": self.args.trials,
                    "sweep.objectives": ", ".join(
                        f"{o.metric}:{o.direction}" for o in self.args.objectives
                    ),
                    "sweep.space": dataclasses.asdict(self.space),
                    "sweep.passthrough": " ".join(self.args.passthrough),
                },
                tags={
                    "mltrack.role": "study",
                    "optuna.study": self.study_name,
                    "mltrack.module": self.args.module,
                },
                tracking_uri=self.tracking_uri,
            )
        )
        self.owns_parent = True
        study.set_user_attr("mlflow_parent_run_id", run.run_id)
        return run

    def objective(self, trial: Any) -> Any:
        import optuna

        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        values = self.space.suggest(trial)
        cfg = dataclasses.replace(self.cfg, **values)
        single = len(self.args.objectives) == 1
        watched = self.args.objectives[0].metric

        def attach(run: Run) -> None:
            trial.set_user_attr("mlflow_run_id", run.run_id)
            # Optuna 5's Trial has no system_attrs; the stored (frozen) trial does.
            frozen = next(
                t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number
            )
            retry_of = frozen.system_attrs.get("failed_trial")
            run.set_tags(
                {
                    "optuna.study": self.study_name,
                    "optuna.trial": trial.number,
                    **({"optuna.retry_of": retry_of} if retry_of is not None else {}),
                }
            )

            def report(epoch: int, metrics: Any) -> None:
                if run.outcome == "diverged":
                    raise RunDiverged()
                if single and watched in metrics and math.isfinite(metrics[watched]):
                    trial.report(metrics[watched], epoch)
                    if trial.should_prune():
                        raise RunPruned()

            run.epoch_hooks.append(report)

        def failed(outcome: str, error: str = "") -> Any:
            trial.set_user_attr("outcome", outcome)
            if error:
                trial.set_user_attr("error", error[:500])
            return tuple(math.nan for _ in self.args.objectives) if not single else math.nan

        try:
            cfg.validate()
            resolved = resolve(cfg.precision, detect_hardware())
            result = self.experiment.run_one(
                cfg, resolved, self.data, parent=self.parent, hooks=[attach]
            )
        except RunPruned:
            trial.set_user_attr("outcome", "pruned")
            raise optuna.TrialPruned() from None
        except RunDiverged:
            return failed("diverged")
        except UsageError as exc:
            return failed("failed", str(exc))
        except Exception as exc:
            if type(exc).__name__ in OOM_ERRORS:
                return failed("infeasible", f"{type(exc).__name__}: {exc}")
            return failed("failed", f"{type(exc).__name__}: {exc}")
        if result.outcome != "completed":  # diverged in the last epoch's hook
            return failed(result.outcome)
        missing = [o.metric for o in self.args.objectives if o.metric not in result.metrics]
        if missing:
            return failed("failed", f"objective metric(s) {missing} not reported by the run")
        trial.set_user_attr("outcome", "completed")
        scores = [result.metrics[o.metric] for o in self.args.objectives]
        return scores[0] if single else tuple(scores)

    def run(self) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            load_if_exists=True,
            sampler=self.sampler_check,
            pruner=make_pruner(self.args, self.cfg.epochs),
            directions=[o.direction for o in self.args.objectives],
        )
        self._check_space(study)
        self._end_orphans()
        self.parent = self._open_parent(study)
        deadline = None if self.args.timeout is None else time.monotonic() + self.args.timeout
        try:
            self._loop(study, deadline)
        except BaseException as exc:
            self.finish(study, exc)
            raise
        self.finish(study, None)
        return study

    def _loop(self, study: Any, deadline: float | None) -> None:
        from optuna.exceptions import ExperimentalWarning
        from optuna.storages import fail_stale_trials

        # fail_stale_trials is marked experimental (since 2.9); it is how a worker that is
        # waiting for others notices a dead one, so we call it knowingly.
        warnings.filterwarnings("ignore", category=ExperimentalWarning)

        while deadline is None or time.monotonic() < deadline:
            fail_stale_trials(study)
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
            if self.args.sampler == "grid" and self.sampler_check.is_exhausted(study):
                break
            study.optimize(self.objective, n_trials=1, gc_after_trial=True)
            self.print_progress(study)

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
        lines.append(f"parent run {parent} in {self.tracking_uri}; browse with: mltrack ui")
        return "\n".join(lines)

    def print_progress(self, study: Any) -> None:
        last = study.get_trials(deepcopy=False)[-1]
        print(
            f"trial {last.number}: {last.state.name.lower()} "
            f"({last.user_attrs.get('outcome', '')}) params {last.params} value {last.values}",
            flush=True,
        )

    def finish(self, study: Any, error: BaseException | None) -> None:
        """Mark the best trial(s), log Optuna's plots, end the parent with the true status."""
        from mltrack.sweep_report import log_plots, mark_best

        if self.parent is None:
            return
        if error is None:
            mark_best(self.parent, study)
            log_plots(self.parent, study)
        self.parent.flush()
        if self.owns_parent:
            exc_info = (type(error), error, error.__traceback__) if error else (None, None, None)
            self._exit.__exit__(*exc_info)
        elif error is None:  # a later worker brings the shared parent to its final state
            self.parent.client.set_terminated(self.parent.run_id, "FINISHED")
            self.parent.sink.close(5)
