"""The entry point every experiment module exposes (design.md §3).

An experiment module provides a ``Config`` dataclass, ``load_data(config)`` and
``train(config, data, run) -> final metrics`` for one run, and calls ``main`` here. This module
does the rest the same way for all of them: parse and validate flags, resolve precisions, load
the data *before* any run exists (bad input leaves no run behind), then train one run, or a
study: a parent run with one child per (precision, repeat). A child that raises ends FAILED with
its error and the study goes on; the parent ends FAILED only if no child completed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from mltrack.compare import published
from mltrack.compare.report import Result, results_table
from mltrack.config import ExperimentConfig, parse_config, quiet_frameworks
from mltrack.errors import Terminated, UsageError
from mltrack.measure.environment import detect_hardware, gpu_energy_mj
from mltrack.measure.precision import Resolved, resolve
from mltrack.tracking import distributed, writer
from mltrack.tracking.limits import redact_uri
from mltrack.tracking.outcomes import describe, outcome_of
from mltrack.tracking.process import sigterm_as_exception
from mltrack.tracking.records import REFUSED, refused_line
from mltrack.tracking.resume import checkpoint_dir
from mltrack.tracking.run import OFFLINE_ENV, Run, is_offline, start_run
from mltrack.tracking.spool import spool_dir
from mltrack.tracking.uris import resolve_tracking_uri, which_tracking_uri
from mltrack.tracking.warmup import PROBES

C = TypeVar("C", bound=ExperimentConfig)
D = TypeVar("D", bound="Dataset")


class Dataset(Protocol):
    def params(self) -> Mapping[str, object]: ...


@dataclass
class RunResult:
    run_id: str
    precision: str
    repeat: int
    outcome: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # what the stop decision tagged
    params: dict[str, str] = field(default_factory=dict)  # as logged (strings)

    def as_result(self) -> Result:
        return Result(self.precision, self.outcome, self.metrics, self.tags, self.run_id)


@dataclass
class Experiment(Generic[C, D]):
    name: str  # the module name under experiments/, also the default MLflow experiment
    config: type[C]
    load_data: Callable[[C], D]
    train: Callable[[C, D, Run], dict[str, float]]
    description: str = ""
    framework: str = "keras"  # "keras" or "torch": what the experiment trains with
    # Where the default recipe departs from the seed's own code, and why (param
    # ``seed.deviations``): the seed cannot run as written, or measures other than it says.
    deviations: Sequence[str] = ()
    # Untimed training before a study's runs, as a seed did before measuring (no run, nothing
    # logged but the precisions it trained and its wall time); returns those precisions.
    warm_up: Callable[[C, D], Sequence[str]] | None = None
    # The table a study's parent run carries (results.md) and the terminal shows.
    study_report: Callable[[Sequence[RunResult]], str] = lambda results: str(
        results_table([r.as_result() for r in results])
    )

    @property
    def module(self) -> str:
        """The importable name of the module defining this experiment (``experiments.NAME``, or
        a user's own ``their_module``): what ``python -m`` and ``mltrack sweep`` take. A module
        run as ``python -m X`` is ``__main__`` with the spec name ``X``."""
        defined_in = sys.modules.get(self.train.__module__)
        spec = getattr(defined_in, "__spec__", None)
        return str(spec.name) if spec is not None else self.train.__module__

    @property
    def prog(self) -> str:
        return f"python -m {self.module}"

    def parse(self, argv: Sequence[str] | None) -> C:
        return parse_config(self.config, argv, self.prog, self.description)

    def run_params(self, cfg: C, resolved: Resolved, data: D, repeat: int) -> dict[str, Any]:
        return {
            **cfg.logged(),
            "seed": cfg.seed + repeat,
            "precision": resolved.resolved,
            "precision_requested": resolved.requested,
            "precision_reason": resolved.reason,
            # micro-batch x accumulation x world size: the samples of one optimizer step
            "effective_batch_size": cfg.effective_batch_size * distributed.world().size,
            "repeat": repeat,
            **self.seed_params(),
            **data.params(),
        }

    def seed_params(self) -> dict[str, str]:
        return {"seed.deviations": "; ".join(self.deviations) or "none"}

    def run_one(
        self,
        cfg: C,
        resolved: Resolved,
        data: D,
        repeat: int = 0,
        parent: Run | None = None,
        hooks: Sequence[Callable[[Run], None]] = (),
        params: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Train one run; ``hooks`` see the open run first (a sweep adds its pruner there);
        ``params`` are logged beside the config's."""
        # Each repeat its own reproducible seed, so repeats measure spread, not the same run.
        run_cfg = dataclasses.replace(cfg, precision=resolved.resolved, seed=cfg.seed + repeat)
        name = f"{self.name}-{resolved.resolved}" + (f"-r{repeat}" if cfg.repeats > 1 else "")
        logged = {**self.run_params(cfg, resolved, data, repeat), **(params or {})}
        with start_run(
            cfg.experiment or self.name,
            run_name=name,
            params=logged,
            tags={"precision": resolved.resolved, "mltrack.module": self.module},
            tracking_uri=cfg.tracking_uri or None,
            parent=parent,
            system_metrics_interval=cfg.system_metrics_interval if cfg.system_metrics else 0.0,
            resume=cfg.resume if parent is None else "",
        ) as run:
            run.checkpoint = cfg.checkpoint  # the framework loops keep one each epoch
            inputs = getattr(data, "mlflow_inputs", None)
            if inputs is not None:  # the UI's Dataset column and filters
                run.log_inputs(inputs())
            for hook in hooks:
                hook(run)
            energy_mj = gpu_energy_mj()
            metrics = self.train(run_cfg, data, run)
            if energy_mj is not None and (end_mj := gpu_energy_mj()) is not None:
                # What the GPUs drew while this run trained (and exported): 1 Wh = 3.6e6 mJ.
                metrics["energy_wh"] = (end_mj - energy_mj) / 3.6e6
                run.log_metrics({"energy_wh": metrics["energy_wh"]}, step=0)
        if run.outcome == "completed":  # a finished run is not resumed: its checkpoint goes
            shutil.rmtree(checkpoint_dir(run.run_id), ignore_errors=True)
        return RunResult(
            run.run_id,
            resolved.resolved,
            repeat,
            run.outcome,
            {**run.latest, **metrics},  # loss_change and the rest the run logged itself
            run.error,
            run.stop_details,
            {k: str(v) for k, v in logged.items()},
        )

    def study_child(
        self, cfg: C, resolved: Resolved, data: D, repeat: int, parent: Run
    ) -> RunResult:
        """One child of a study; an exception ends that child (FAILED), not the study."""
        opened: list[Run] = []
        try:
            return self.run_one(cfg, resolved, data, repeat, parent, hooks=[opened.append])
        except Exception as exc:
            traceback.print_exc()
            run_id = opened[0].run_id if opened else ""
            return RunResult(run_id, resolved.resolved, repeat, outcome_of(exc), {}, describe(exc))

    def warm(self, cfg: C, data: D) -> dict[str, str]:
        """Run the experiment's warm-up, if it has one; its params for the study's run."""
        started = time.perf_counter()
        trained = self.warm_up(cfg, data) if self.warm_up else ()
        if not trained:
            return {}
        seconds = time.perf_counter() - started
        print(f"warm-up (untimed, not logged as a run): {', '.join(trained)}, {seconds:.1f}s")
        return {"warmup": ",".join(trained), "warmup_wall_s": f"{seconds:.2f}"}

    def execute(self, cfg: C, data: D) -> list[RunResult]:
        hardware = detect_hardware()
        variants = [resolve(p, hardware) for p in cfg.precision_list()]
        warm = self.warm(cfg, data)
        if len(variants) == 1 and cfg.repeats == 1:
            return [self.run_one(cfg, variants[0], data, params=warm)]
        with start_run(
            cfg.experiment or self.name,
            run_name=f"{self.name}-study",
            params={**cfg.logged(), **self.seed_params(), **data.params(), **warm},
            tags={"mltrack.role": "study", "mltrack.module": self.module},
            tracking_uri=cfg.tracking_uri or None,
        ) as parent:
            results = [
                self.study_child(cfg, variant, data, repeat, parent)
                for variant in variants
                for repeat in range(cfg.repeats)
            ]
            parent.log_text(self.report(results), "results.md")
            if not any(r.outcome == "completed" for r in results):
                parent.stop("failed", f"no child run completed ({len(results)} ended otherwise)")
        return results

    def report(self, results: Sequence[RunResult]) -> str:
        """The study's table, the seed's published figures beside the measured ones, then the
        children that failed and why."""
        failed = [r for r in results if r.error]
        lines = [
            f"- {r.precision} repeat {r.repeat} ({r.run_id or 'no run'}): {r.error}" for r in failed
        ]
        runs = [({**r.params, "precision": r.precision}, r.as_result()) for r in results]
        seed = "".join(f"\n\n{t}" for t in published.tables_for(self.name, runs))
        return (
            self.study_report(results)
            + seed
            + ("\n\nFailed runs:\n" + "\n".join(lines) if lines else "")
        )

    def main(self, argv: Sequence[str] | None = None) -> int:
        """``python -m experiments.NAME``; under a launcher, the ranks other than 0 train
        without a store and print nothing but errors (``mltrack.tracking.distributed``)."""
        if not distributed.world().is_rank_zero:
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                return self._main(argv)
        return self._main(argv)

    def _main(self, argv: Sequence[str] | None = None) -> int:
        try:
            cfg = self.parse(argv)
            rank_zero = distributed.world().is_rank_zero  # the job's one run is rank 0's
            if rank_zero:
                uri = which_tracking_uri(cfg.tracking_uri or None)  # a malformed URI: bad input
                if cfg.offline:
                    os.environ[OFFLINE_ENV] = "1"
                if not is_offline():  # its start-up overlaps the framework's import
                    writer.start(spool_dir())
            quiet_frameworks(cfg.verbose, self.framework)
            if rank_zero:
                # The probes run on a thread while the data loads (after the framework's
                # import, which a thread would only slow: warmup).
                PROBES.begin()
                if not is_offline():  # the writer checks the store while the data loads
                    asked = writer.ask(spool_dir(), uri, cfg.experiment or self.name)
            data = self.load_data(cfg)
            if rank_zero and not is_offline():  # a refused store or experiment: before training
                state, reason = writer.answer(asked, 60)
                if state == "bad":
                    raise UsageError(reason)
        except UsageError as exc:
            print(f"{self.prog}: error: {exc}", file=sys.stderr)
            return 2
        try:
            with sigterm_as_exception():
                results = self.execute(cfg, data)
        except UsageError as exc:  # found at the store (a resumed run's changed param)
            print(f"{self.prog}: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{self.prog}: interrupted; run(s) ended as KILLED", file=sys.stderr)
            return 130
        except Terminated:
            print(f"{self.prog}: terminated; run(s) ended as KILLED", file=sys.stderr)
            return 143
        print()
        print(self.report(results))
        if REFUSED:
            print(f"{self.prog}: {refused_line()}", file=sys.stderr)
            return 1
        uri = resolve_tracking_uri(cfg.tracking_uri or None)
        print(
            f"\nRuns are in {redact_uri(uri)}. Browse them with:\n  {mltrack_command()} ui"
            + ("" if cfg.tracking_uri == "" else f" --tracking-uri {redact_uri(uri)}")
        )
        return 0 if any(r.outcome == "completed" for r in results) else 1


def mltrack_command() -> str:
    """How to call ``mltrack`` from here: by name if that is this environment's, else its path
    (after the README's set-up it is ``.venv/bin/mltrack``, not on PATH)."""
    script = Path(sys.executable).with_name("mltrack")
    found = shutil.which("mltrack")
    if not script.exists() or (found and Path(found).resolve() == script.resolve()):
        return "mltrack"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
