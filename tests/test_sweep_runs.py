"""Real sweeps over experiments.fashion_mnist_precision on offline digits.

One worker on sqlite; then three workers on a real PostgreSQL, one of them SIGKILLed mid-trial.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from mltrack.sweep import counted
from tests.conftest import all_runs, env_for, wait_until
from tests.postgres import postgres_server

SWEEP = [
    sys.executable,
    "-m",
    "mltrack.cli",
    "sweep",
    "experiments.fashion_mnist_precision",
    "--dataset",
    "digits",
    "--no-export",
]
STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


def sweep(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SWEEP, *args],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Each case forced with enqueue_trial, so no status depends on what a sampler draws:
ENQUEUED = [
    ({"precision": "fp32", "batch_size": 16, "accumulation_steps": 1}, "completed"),
    ({"precision": "mixed_bf16", "batch_size": 16, "accumulation_steps": 1}, "completed"),
    # fp16 on digits goes NaN in its first epoch (the seed-002 finding).
    ({"precision": "fp16", "batch_size": 16, "accumulation_steps": 1}, "diverged"),
    # 3 micro-batches an epoch, 4 per optimizer step: no update in epoch 0, so its accuracy
    # is at chance while the two completed trials' median is far above: the pruner stops it.
    ({"precision": "fp32", "batch_size": 512, "accumulation_steps": 4}, "pruned"),
]
SPACE = [
    "--space-precision",
    "fp32,fp16,mixed_bf16",
    "--space-batch-size",
    "16,512",
    "--space-accumulation-steps",
    "1,4",
]


def test_enqueued_trials_end_as_optuna_says_with_one_parent(tmp_path, client):
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    study = optuna.create_study(
        study_name="fashion_mnist_precision", storage=storage, direction="maximize"
    )
    for params, _ in ENQUEUED:
        study.enqueue_trial(params)
    result = sweep(tmp_path, "--epochs", "3", "--trials", "4", "--sampler", "random", *SPACE)
    assert result.returncode == 0, result.stderr[-3000:]
    # Optuna's messages the user cannot act on stay off the terminal (mltrack says each
    # trial's outcome itself): no per-trial log lines, no "failed with value nan" for the
    # diverged trial, no ExperimentalWarning, no "There are no complete trials".
    terminal = result.stdout + result.stderr
    for noise in ("ExperimentalWarning", "no complete trials", "[W ", "[I ", "value nan"):
        assert noise not in terminal, terminal[-3000:]
    trials = study.get_trials()
    assert len(trials) == 4 == counted(trials)
    runs = all_runs(client)
    [parent] = [r for r in runs if r.data.tags.get("mltrack.role") == "study"]
    children = {r.data.tags["optuna.trial"]: r for r in runs if r is not parent}
    assert len(children) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    for trial, (params, outcome) in zip(trials, ENQUEUED, strict=True):
        run = children[str(trial.number)]
        assert trial.params == params
        assert (trial.user_attrs["outcome"], run.data.tags["outcome"]) == (outcome, outcome)
        assert trial.state == {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(
            outcome, TrialState.FAIL
        )
        assert run.info.status == STATUS[trial.state], (trial.number, trial.state)
        assert run.data.params["precision"] == params["precision"]
        assert run.data.params["accumulation_steps"] == str(params["accumulation_steps"])
    pruned = children[str(trials[3].number)]
    assert len(client.get_metric_history(pruned.info.run_id, "loss")) < 3  # stopped early
    assert "export" not in pruned.data.tags  # --no-export: nothing to skip
    best = study.best_trial
    assert best.params["precision"] != "fp16"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_trial"] == str(best.number)
    assert children[str(best.number)].data.tags["optuna.best"] == "true"
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert "optuna/optimization_history.png" in plots
    # Resuming the same study continues it rather than starting over.
    again = sweep(tmp_path, "--epochs", "1", "--trials", "5", "--sampler", "random", *SPACE)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(study.get_trials()) == 5
    changed = sweep(tmp_path, "--epochs", "1", "--trials", "6", "--space-batch-size", "8")
    assert changed.returncode == 2 and "or a new --study name" in changed.stderr
    # Another objective (or direction) would mix val_loss values into a study that maximizes.
    for objective in ("val_loss:min", "val_accuracy:min"):
        other = sweep(tmp_path, "--epochs", "1", "--trials", "6", *SPACE, "--objective", objective)
        assert other.returncode == 2, other.stderr[-2000:]
        assert "--objective: got" in other.stderr and "or a new --study name" in other.stderr
    assert len(study.get_trials()) == 5
    assert len([r for r in all_runs(client) if r.data.tags.get("mltrack.role") == "study"]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["experiments.nope"], "module: got 'experiments.nope', expected an importable experiment"),
        (["--space-precision", "fp32,fp8"], "--space-precision: got 'fp8', expected one of"),
        (
            ["--storage", "postgresql://nobody@127.0.0.1:1/none"],
            "--storage: got 'postgresql://nobody@127.0.0.1:1/",
        ),
        (["--objective", "accuracy"], "--objective: got 'accuracy', expected METRIC:max"),
        (
            ["--heartbeat-interval", "10", "--grace-period", "2"],
            "--grace-period: got 2, expected more seconds than --heartbeat-interval (10)",
        ),
        (  # equal is too short too: a heartbeat a moment late fails a live trial
            ["--heartbeat-interval", "60"],  # the default grace period
            "--grace-period: got 60, expected more seconds than --heartbeat-interval (60)",
        ),
        (["--epochs", "0"], "--epochs: got 0, expected an integer >= 1"),
    ],
)
def test_bad_input_exits_2_with_no_study_and_no_run(tmp_path, args, message):
    command = list(SWEEP)
    if args[0].startswith("experiments."):
        command[4] = args[0]
        args = []
    result = subprocess.run(
        [*command, *args],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
    optuna_db = tmp_path / "mlruns" / "optuna.db"
    if optuna_db.exists():
        assert optuna.get_all_study_names(f"sqlite:///{optuna_db}") == []


def test_three_postgres_workers_one_starved_30s_one_killed_on_shipped_defaults(tmp_path):
    """No --heartbeat-interval/--grace-period: the defaults must tell starved from dead."""
    with postgres_server() as server:
        storage, tracking = f"{server}/optuna", f"{server}/mlflow"
        # One storage (one connection pool) for all the polling below; it also creates the
        # schema once, before the workers race to.
        shared = optuna.storages.RDBStorage(storage)
        client = MlflowClient(tracking_uri=tracking)
        client.search_experiments()
        args = [
            "--epochs",
            "4",
            "--trials",
            "8",
            "--storage",
            storage,
            "--study",
            "shared",
            "--tracking-uri",
            tracking,
            "--sampler",
            "random",
            "--pruner",
            "none",
            "--space-precision",
            "fp32,mixed_bf16",
        ]
        env = env_for(tmp_path)

        def start(seed: int) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [*SWEEP, *args, "--sampler-seed", str(seed)],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

        def study() -> optuna.Study:
            return optuna.load_study(study_name="shared", storage=shared)

        workers = [start(0)]
        wait_until(
            lambda: (
                "shared" in optuna.get_all_study_names(shared)
                and "mlflow_parent_run_id" in study().user_attrs
            ),
            180,
            "the first worker",
        )
        workers += [start(1), start(2)]
        victim, sleeper = workers[1], workers[2]

        def mid_trial(worker: subprocess.Popen[str]) -> int | None:
            for t in study().get_trials(states=(TrialState.RUNNING,)):
                if (
                    t.user_attrs.get("worker", "").endswith(f":{worker.pid}")
                    and "mlflow_run_id" in t.user_attrs
                    and client.get_metric_history(t.user_attrs["mlflow_run_id"], "loss")
                ):
                    return int(t.number)
            return None

        wait_until(lambda: mid_trial(victim) is not None, 300, "the victim to be mid-trial")
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(lambda: mid_trial(sleeper) is not None, 300, "the sleeper to be mid-trial")
        starved = mid_trial(sleeper)
        os.kill(sleeper.pid, signal.SIGSTOP)  # off the CPU: no heartbeat thread runs either
        time.sleep(30)
        os.kill(sleeper.pid, signal.SIGCONT)
        outputs = {}
        for w in (workers[0], sleeper):
            outputs[w.pid] = w.communicate(timeout=500)[0]
            assert w.returncode == 0, outputs[w.pid][-3000:]
        victim.wait(timeout=30)

        trials = study().get_trials()
        numbers = [t.number for t in trials]
        assert len(numbers) == len(set(numbers))
        # The starved worker's trial was not reaped: it finished, in MLflow too.
        [kept] = [t for t in trials if t.number == starved]
        assert kept.state == TrialState.COMPLETE, (kept.state, kept.user_attrs)
        assert client.get_run(kept.user_attrs["mlflow_run_id"]).info.status == "FINISHED"
        assert not [t for t in trials if t.system_attrs.get("failed_trial") == starved]
        # The killed worker's trial was: failed by its heartbeat and retried with its params.
        [dead] = [
            t
            for t in trials
            if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
            and t.state == TrialState.FAIL
        ]
        assert "outcome" not in dead.user_attrs  # failed by its heartbeat, not by the objective
        [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
        assert retry.state == TrialState.COMPLETE and retry.params == dead.params
        assert 8 <= counted(trials) <= 10  # the count; a busy worker may finish one extra
        assert dead.datetime_complete.timestamp() >= killed_at - 1
        # MLflow agrees: the dead trial's run is KILLED with the reason (its writer ended it
        # at once, before the stale-trial check got there), the retry FINISHED.
        dead_run = client.get_run(dead.user_attrs["mlflow_run_id"])
        assert dead_run.info.status == "KILLED"
        assert "ended without ending its run" in dead_run.data.tags["error"]
        retry_run = client.get_run(retry.user_attrs["mlflow_run_id"])
        assert retry_run.info.status == "FINISHED"
        assert retry_run.data.tags["optuna.retry_of"] == str(dead.number)
        experiment = client.get_experiment_by_name("fashion_mnist_precision")
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("mltrack.role") == "study"]
        assert len(parents) == 1
        children = [
            r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
        ]
        assert len(children) == len([t for t in trials if t.state != TrialState.WAITING])


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_worker_ends_its_trial_in_optuna_and_mlflow(tmp_path, client, signum, code):
    """SIGTERM (a scheduler, `docker stop`) and Ctrl-C end the trial in progress in both
    stores, with its outcome, instead of leaving it RUNNING for another worker to reap."""
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    sweep = [*SWEEP, "--epochs", "200", "--trials", "3", "--storage", storage, "--study", "stop"]
    # As from a terminal: SIGINT at its default. A test runner started in the background by a
    # non-interactive shell (`make test &`, some CI) has SIGINT ignored, its children inherit
    # that, and a Python started so keeps ignoring it, as it should for a background job.
    terminal = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    terminal += "os.execv(sys.executable, sys.argv[1:])"
    worker = subprocess.Popen(
        [sys.executable, "-c", terminal, *sweep],
        cwd=tmp_path,
        env=env_for(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def training() -> bool:
        runs = [r for r in all_runs(client) if "optuna.trial" in r.data.tags]
        return bool(runs) and bool(client.get_metric_history(runs[0].info.run_id, "loss"))

    wait_until(training, 300, "a trial to train")
    worker.send_signal(signum)
    try:
        _, err = worker.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # say where it hangs: every thread's stack (mltrack.cli)
        worker.send_signal(signal.SIGUSR1)
        time.sleep(2)
        worker.kill()
        _, err = worker.communicate()
        raise AssertionError(f"the worker did not stop in 120 s:\n{err[-6000:]}") from None
    assert worker.returncode == code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    [trial] = optuna.load_study(study_name="stop", storage=storage).trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["outcome"] == "killed"
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert (run.info.status, run.data.tags["outcome"]) == ("KILLED", "killed")
    assert counted([trial]) == 0  # not a result: a restarted sweep runs it again


def stop_between_writes(process: subprocess.Popen[str], databases: list[Path]) -> None:
    """SIGSTOP ``process`` at a moment it holds no lock on the sqlite files ``databases``.

    sqlite locks a whole file while a process writes, so a worker stopped inside one of its
    writes (a heartbeat every second, a report each epoch) would keep every other worker out:
    the limit docs/sweeps.md states for sqlite, not the starved worker this test is about. Stopped,
    the process is checked with ``BEGIN EXCLUSIVE`` (which needs no other process to hold any
    lock); if it holds one it runs on for a moment and is stopped again."""
    for _ in range(100):
        os.kill(process.pid, signal.SIGSTOP)
        wait_until(lambda: _state(process.pid) == "T", 10, "the worker to stop")
        if not any(_locked(db) for db in databases):
            return
        os.kill(process.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError(f"{databases} stayed locked at 100 stops of the worker")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _locked(db: Path) -> bool:
    connection = sqlite3.connect(db, timeout=0)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        connection.rollback()
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        connection.close()


def test_a_stopped_sqlite_writer_gets_a_worker_a_one_line_reason(tmp_path):
    """A worker that starts while another holds a sqlite storage's lock (stopped in the middle
    of a write) exits 2 with one line that says so, not "expected a reachable database"."""
    storage = tmp_path / "optuna.db"
    optuna.create_study(study_name="held", storage=f"sqlite:///{storage}")
    holder = sqlite3.connect(storage)
    holder.execute("BEGIN EXCLUSIVE")  # as a writer stopped mid-commit holds it
    try:
        result = subprocess.run(
            [*SWEEP, "--storage", f"sqlite:///{storage}", "--study", "held", "--trials", "1"],
            cwd=tmp_path,
            env=env_for(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--storage" in lines[0], result.stderr[-2000:]
    assert "no other process holds locked" in lines[0] and "PostgreSQL" in lines[0]


def test_a_starved_worker_whose_trial_was_reaped_goes_on_cleanly(tmp_path, client):
    """A worker stopped (SIGSTOP: starved) for longer than the grace period has its trial
    failed as stale and retried by another; when it runs again it stops that trial, says why
    in one line, and goes on: no "Cannot tell a FAIL trial" traceback, no crash recorded."""
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    common = [*SWEEP, "--storage", storage, "--study", "starved", "--trials", "3"]
    common += ["--heartbeat-interval", "1", "--grace-period", "3", "--pruner", "none"]
    common += ["--space-precision", "fp32", "--space-batch-size", "64"]

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*common, *args],
            cwd=tmp_path,
            env=env_for(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    starved = start("--epochs", "400")

    def training() -> bool:
        runs = [r for r in all_runs(client) if "optuna.trial" in r.data.tags]
        return bool(runs) and bool(client.get_metric_history(runs[0].info.run_id, "loss"))

    wait_until(training, 300, "the first worker's trial to train")
    stop_between_writes(
        starved, [tmp_path / "mlruns" / "optuna.db", tmp_path / "mlruns" / "mlflow.db"]
    )
    try:
        other = start("--epochs", "1", "--sampler-seed", "1")
        out, err = other.communicate(timeout=300)
        assert other.returncode == 0, err[-3000:]
    finally:
        os.kill(starved.pid, signal.SIGCONT)
    out, err = starved.communicate(timeout=300)
    assert starved.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "was failed as stale by another worker" in out
    trials = optuna.load_study(study_name="starved", storage=storage).trials
    [reaped] = [t for t in trials if t.number == 0]
    assert reaped.state == TrialState.FAIL
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.state == TrialState.COMPLETE
    run = client.get_run(reaped.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "stale" in run.data.tags["error"]
    parent = [r for r in all_runs(client) if r.data.tags.get("mltrack.role") == "study"]
    assert len(parent) == 1 and "error" not in parent[0].data.tags
