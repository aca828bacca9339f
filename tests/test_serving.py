"""An exported run is an MLflow model: ``--register`` puts it in the registry and
``mlflow models serve`` answers HTTP requests with it (issue 12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import all_runs, env_for, wait_until
from tests.test_cli import free_port


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_registered_model_is_served_over_http(run_module, client, store, tmp_path):
    args = ("--dataset", "digits", "--epochs", "1", "--precision", "fp32", "--repeats", "1")
    result = run_module("experiments.fashion_mnist_precision", *args, "--register", "digits-cnn")
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    [version] = client.search_model_versions("name='digits-cnn'")
    # The version is the run's MLflow 3 logged model (issue 20), not a copy of its files.
    [model] = client.search_logged_models([run.info.experiment_id])
    assert model.source_run_id == run.info.run_id and model.name == "model"
    assert version.run_id == run.info.run_id and version.source == model.artifact_location

    # As the README says: the registered version, served with the installed packages, from the
    # store the run went to. MLflow starts uvicorn by name: the venv's scripts are on PATH.
    port = free_port()
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**env_for(tmp_path), "PATH": path, "MLFLOW_TRACKING_URI": store}
    command = ["models", "serve", "-m", "models:/digits-cnn/1", "-p", str(port)]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", *command, "--env-manager", "local"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        up = lambda: server.poll() is not None or answers(f"http://127.0.0.1:{port}/ping")  # noqa: E731
        wait_until(up, 180, "mlflow models serve")
        assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        example = client.download_artifacts(run.info.run_id, "model/serving_input_example.json")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=Path(example).read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
        rows = json.loads(Path(example).read_text())["inputs"]
        assert len(predictions) == len(rows) and len(predictions[0]) == 10
        assert abs(sum(predictions[0]) - 1) < 1e-3  # softmax probabilities
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_register_without_export_is_a_usage_error(run_module, client):
    result = run_module("experiments.cifar_amp", "--no-export", "--register", "cnn")
    assert result.returncode == 2
    assert "--register" in result.stderr and "cnn" in result.stderr
    assert all_runs(client) == []  # nothing half-written
