"""Shared fixtures: a real MLflow sqlite store per test, and a way to run modules for real."""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pytest import approx

ROOT = Path(__file__).resolve().parents[1]
# One peak calibration (mltrack.measure.efficiency) per machine for the whole suite, not one per
# test's HOME: the cache is keyed by the hardware fingerprint.
CACHE = Path(tempfile.gettempdir()) / "mltrack-test-cache"
os.environ["MLTRACK_CACHE_DIR"] = str(CACHE)

# Runs opened in the pytest process itself are delivered by a writer on a thread of it (the
# same couriers as the writer process's), not one process per test's spool folder; the modules
# run as commands (``run_module``) start the real writer process, as users' do.
from mltrack.tracking import writer  # noqa: E402

writer.embed()


# Test files whose tests start servers, trainings and sweeps and mostly wait on them (15-100 s
# each). They are handed out first: under `pytest -n N` (make test) the short unit tests then
# fill the workers' last minutes instead of one long test running alone at the end.
LONG_FIRST = (
    "tests/test_sweep_runs.py",
    "tests/test_server.py",
    "tests/test_server_load.py",
    "tests/test_store_refusals.py",
    "tests/test_concurrent_starts.py",
    "tests/test_ui_browser.py",
    "tests/test_own_training.py",
    "tests/test_torchrun.py",
    "tests/experiments/",
    "tests/test_writer.py",
)


def start_order(item: pytest.Item) -> int:
    path = item.nodeid.split("::")[0]
    return next((i for i, p in enumerate(LONG_FIRST) if path.startswith(p)), len(LONG_FIRST))


@pytest.hookimpl(trylast=True)  # after `-m` has deselected what this process will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to load TensorFlow and torch into one process: it aborts the whole run. Then put
    the long integration tests first (``LONG_FIRST``), each file's tests in their own order."""
    kinds = {mark for item in items for mark in ("tf", "torch") if item.get_closest_marker(mark)}
    if kinds == {"tf", "torch"}:
        raise pytest.UsageError(
            "tests marked tf and torch cannot share a process (TensorFlow and torch abort "
            "together); run `pytest -m 'not torch'` and `pytest -m torch` (as `make test` does)"
        )
    items.sort(key=start_order)  # stable: the order within a file is kept


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh embedded store (sqlite) in the test's own directory."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def client(store: str, monkeypatch):
    from mlflow import MlflowClient

    from mltrack.tracking.uris import resolve_tracking_uri

    resolve_tracking_uri(store)
    # MLflow 3.17 resolves a run's logged model (runs:/ID/model, list_artifacts(ID, "model"))
    # with a client of the *default* tracking URI (ModelsArtifactRepository._get_model_uri_infos),
    # not this client's: the default must be this store, as it is for a user who sets
    # MLFLOW_TRACKING_URI.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
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
    # The product's own defaults decide what the frameworks print, not the developer's shell.
    quiet = ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL")
    env = {k: v for k, v in os.environ.items() if k not in quiet}
    env.update(
        PYTHONPATH=str(ROOT),
        MLFLOW_TRACKING_URI="",
        PYTHONUNBUFFERED="1",
        HOME=str(tmp_path),  # no Keras dataset cache from the developer's machine
        MLTRACK_CACHE_DIR=str(CACHE),
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


@pytest.fixture
def run_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    """Call ``MODULE.EXPERIMENT.main(ARGS)`` in this process, from tmp_path with run_module's
    environment: its exit code and what it printed on stderr.

    For the many variants of bad input an experiment refuses before any run: each subprocess
    would pay a framework's import again (10 s here) to show the same return. The tests that
    run ``python -m experiments.X`` for one bad input each keep the process's exit code honest.
    """

    def run(module: str, *args: str) -> tuple[int, str]:
        monkeypatch.chdir(tmp_path)
        # Unset, as in a fresh shell; set first so that the variables the experiment sets for
        # itself (quiet_frameworks) are undone after the test too.
        for name in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL", "MLFLOW_TRACKING_URI"):
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("MLTRACK_CACHE_DIR", str(CACHE))
        capsys.readouterr()
        code = importlib.import_module(module).EXPERIMENT.main(list(args))
        return code, capsys.readouterr().err

    return run


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def study_runs(client) -> tuple[Any, list[Any]]:
    """A study's parent run and its children."""
    runs = all_runs(client)
    [parent] = [r for r in runs if r.data.tags.get("mltrack.role") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def start_training(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stderr: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    """A long cifar_amp training on synthetic data, in the background (to stop or kill)."""
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.cifar_amp", "--dataset", "synthetic", *args],
        cwd=tmp_path,
        env=env or env_for(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def epochs_logged(client, experiment: str = "cifar_amp") -> int:
    """How many epochs the newest run of ``experiment`` has in the store so far."""
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception:  # the store is being created by the process under test
        return 0
    runs = client.search_runs([found.experiment_id]) if found else []
    return len(client.get_metric_history(runs[0].info.run_id, "loss")) if runs else 0


@contextmanager
def ui_server(store: str, tmp_path: Path) -> Iterator[str]:
    """``mltrack ui`` over ``store`` on a free loopback port; yields its base URL (what it
    printed is in ``tmp_path / "ui.out"``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "mltrack.cli", "ui", "--tracking-uri", store, "--port", str(port)],
        cwd=tmp_path,
        env=env_for(tmp_path),
        stdout=(tmp_path / "ui.out").open("w"),
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_get(f"{base}/health")[0] == 200, 120, "the MLflow UI")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read()
    except OSError:
        return 0, b""


def check_timing_model(client, run_id: str, train_samples: int, validation_s: float) -> None:
    """The definitions of mltrack.measure.ledger, the same for Keras and torch
    (tests/test_torch.py).

    ``validation_s``: one validation pass over the same data, timed by the test right after
    training: the reference ``val_wall_s`` is held to, so the check holds on a busy machine
    too (a fixed share of the epoch did not: training slows more than evaluation there).
    """
    history = {
        key: [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        for key in ("train_wall_s", "val_wall_s", "epoch_wall_s", "samples_per_s")
    }
    for train, val, epoch, rate in zip(*history.values(), strict=True):
        assert train > 0 and val > 0 and train + val <= epoch * (1 + 1e-9)
        assert rate == approx(train_samples / train, rel=1e-6)
        # the validation pass itself: not a rounding error, not the training steps
        assert 0.2 * validation_s < val < train + 10 * validation_s, (train, val, validation_s)


def check_efficiency(client, run, framework: str = "") -> None:
    """Per epoch achieved TFLOP/s, 0 < MFU <= 1 against the peak measured with the training
    framework's kernels, and MFU against the physical bound at most that, or the reason the
    machine has no bound (issue 31)."""
    tags = run.data.tags
    assert float(tags["hw.peak_tflops.fp32"]) > 0 and float(tags["hw.peak_tflops.bf16"]) > 0
    if framework:
        assert tags["hw.peak_framework"] in (framework, "datasheet"), tags["hw.peak_framework"]

    def by_step(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}

    mfu, achieved, bound = by_step("mfu"), by_step("achieved_tflops"), by_step("mfu_bound")
    assert mfu and len(mfu) == len(achieved), (mfu, achieved)
    assert all(0 < value <= 1 for value in mfu.values()), mfu
    if bound:
        assert all(bound[step] <= mfu[step] for step in bound), (bound, mfu)
    else:
        assert tags.get("hw.bound_unavailable"), "neither mfu_bound nor the reason it is absent"
    assert float(run.data.params["model.train_flops_per_sample"]) > 0


# Loads a run's exported model with public APIs alone (no mltrack import) in a fresh process:
# the format files with the framework, and the MLflow model with ``mlflow.pyfunc.load_model``
# from ``runs:/ID/model``; each runs batches of 3 and 5 images of pixel values 0-255, as uint8
# and as float32 (what the README promises a deployed image model takes), as a user would.
RELOAD = {
    "keras": """
import sys, keras, numpy as np
model = keras.models.model_from_json(open(sys.argv[1] + "/model.json").read())
model.load_weights(sys.argv[1] + "/model.weights.h5")
check(lambda x: model.predict(x, verbose=0))
""",
    "torch": """
import sys, torch, numpy as np
program = torch.export.load(sys.argv[1] + "/model.pt2").module()
scripted = torch.jit.load(sys.argv[1] + "/model.torchscript.pt")
for module in (program, scripted):
    check(lambda x: module(torch.as_tensor(x).float()).detach().numpy())
""",
}
CHECK = """
import json, sys, numpy as np
shape, classes = json.loads(sys.argv[3]), int(sys.argv[4])
def check(predict):
    for n in (3, 5):
        pixels = np.random.default_rng(n).integers(0, 256, (n, *shape))
        outputs = [np.asarray(predict(pixels.astype(t))) for t in ("uint8", "float32")]
        assert all(o.shape[0] == n and o.size == n * classes for o in outputs), outputs
        np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-3, atol=1e-3)
"""
PYFUNC = """
import mlflow
check(mlflow.pyfunc.load_model(f"runs:/{sys.argv[2]}/model").predict)
assert not [m for m in sys.modules if m == "mltrack" or m.startswith("mltrack.")]
print("ok")
"""


def reload_without_mltrack(
    client,
    run_id: str,
    framework: str,
    tmp_path: Path,
    shape: tuple[int, ...] | None = None,
    classes: int = 10,
) -> None:
    """``shape``: one image's (default: CIFAR's, NHWC for Keras, NCHW for torch)."""
    shape = shape or ((32, 32, 3) if framework == "keras" else (3, 32, 32))
    folder = client.download_artifacts(run_id, "model", str(tmp_path / "exported"))
    script = CHECK + RELOAD[framework] + PYFUNC
    result = subprocess.run(
        [sys.executable, "-c", script, folder, run_id, json.dumps(shape), str(classes)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # not the repository: mltrack is not importable by accident
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "MLFLOW_TRACKING_URI": client.tracking_uri,
        },
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def verified_children(client, precisions: set[str]) -> dict[str, Any]:
    """A study's children by precision: each FINISHED, its export reloaded and timed."""
    _, children = study_runs(client)
    ran = {r.data.params["precision"]: r for r in children}
    assert set(ran) == precisions
    for precision, run in ran.items():
        assert run.info.status == "FINISHED", (precision, run.data.tags.get("error"))
        assert run.data.tags["reload_ok"] == "true", (precision, run.data.tags)
        assert run.data.metrics["export_wall_s"] > 0
    return ran
