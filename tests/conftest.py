"""Shared fixtures: a real MLflow sqlite store per test, and a way to run modules for real."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.hookimpl(trylast=True)  # after `-m` has deselected what this process will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to load TensorFlow and torch into one process: it aborts the whole run."""
    kinds = {mark for item in items for mark in ("tf", "torch") if item.get_closest_marker(mark)}
    if kinds == {"tf", "torch"}:
        raise pytest.UsageError(
            "tests marked tf and torch cannot share a process (TensorFlow and torch abort "
            "together); run `pytest -m 'not torch'` and `pytest -m torch` (as `make test` does)"
        )


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh embedded store (sqlite) in the test's own directory."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def client(store: str):
    from mlflow import MlflowClient

    from mltrack.run import resolve_tracking_uri

    resolve_tracking_uri(store)
    return MlflowClient(tracking_uri=store)


def all_runs(client, experiment: str | None = None) -> list:
    """Every run in the store (optionally of one experiment), oldest first."""
    if experiment is None:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        exp = client.get_experiment_by_name(experiment)
        ids = [exp.experiment_id] if exp else []
    if not ids:
        return []
    return sorted(client.search_runs(ids), key=lambda r: r.info.start_time)


def env_for(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        TF_CPP_MIN_LOG_LEVEL="3",
        MLFLOW_TRACKING_URI="",
        PYTHONUNBUFFERED="1",
        HOME=str(tmp_path),  # no Keras dataset cache from the developer's machine
    )
    return env


@pytest.fixture
def run_module(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m MODULE ARGS`` in tmp_path, as a user would, and return the result."""

    def run(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=tmp_path,
            env=env_for(tmp_path),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
