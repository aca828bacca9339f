"""A real ``mlflow server`` on a real PostgreSQL, both started here on 127.0.0.1.

The shared topology of README "Shared deployment", without Docker: nothing a worker measured
is lost while the server is away, and nobody without credentials gets in.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

from tests.conftest import env_for, epochs_logged, http_get, start_training, wait_until
from tests.postgres import postgres_server
from tests.test_cli import free_port


@contextmanager
def mlflow_server(
    backend: str, artifacts: Path, port: int, *extra: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log = artifacts.parent / f"server-{port}.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]
    with log.open("ab") as output:
        proc = subprocess.Popen(
            command,
            env=env or dict(os.environ),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited: {log.read_text()[-3000:]}")
        return http_get(f"http://127.0.0.1:{port}/health")[0] == 200

    try:
        try:
            wait_until(healthy, 180, "mlflow server")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_server_outage_mid_run_loses_nothing_and_counts_nothing_twice(tmp_path):
    # Long enough that the 20 s outage (plus the restart) ends well before training does, so
    # this test shows the metrics path; artifacts spooled during an outage are covered by
    # tests/test_spool.py.
    epochs = 150
    with postgres_server(("mlflow",)) as pg:
        backend, artifacts, port = f"{pg}/mlflow", tmp_path / "artifacts", free_port()
        uri = f"http://127.0.0.1:{port}"
        env = env_for(tmp_path)
        # The client's own retry window: one quick retry, then our sink's spool takes over.
        env.update(
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
            MLFLOW_HTTP_REQUEST_TIMEOUT="5",
            MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
            MLTRACK_SPOOL_DIR=str(tmp_path / "spool"),
        )
        client = MlflowClient(tracking_uri=uri)
        with mlflow_server(backend, artifacts, port) as server:
            training = start_training(
                tmp_path,
                "--synthetic-size",
                "1024",
                "--batch-size",
                "64",
                "--epochs",
                str(epochs),
                "--tracking-uri",
                uri,
                env=env,
                stderr=subprocess.PIPE,
            )
            wait_until(lambda: epochs_logged(client) >= 2, 240, "two epochs on the server")
            run_id = client.search_runs([client.get_experiment_by_name("cifar_amp").experiment_id])[
                0
            ].info.run_id
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        outage_started = time.monotonic()
        spool = tmp_path / "spool" / f"{run_id}.jsonl"
        wait_until(spool.exists, 60, "points spooled to local disk during the outage")
        time.sleep(max(0.0, 20 - (time.monotonic() - outage_started)))  # well past the window
        # Training goes on while the server is away (it may even finish before it is back).
        assert training.poll() in (None, 0), "training must not fail because the server is away"
        with mlflow_server(backend, artifacts, port):
            _, stderr = training.communicate(timeout=600)
            assert training.returncode == 0, stderr[-3000:]
            # If the run ended before the server was back, its end waits in the spool.
            sync = subprocess.run(
                [sys.executable, "-m", "mltrack.cli", "sync"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert sync.returncode == 0, sync.stdout + sync.stderr
            run = client.get_run(run_id)
            assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
            for key in ("loss", "val_loss", "epoch_wall_s"):
                steps = [m.step for m in client.get_metric_history(run_id, key)]
                assert sorted(steps) == list(range(epochs)), (key, sorted(steps))
            assert run.data.tags["reload_ok"] == "true"  # artifacts went through the proxy
            listed = [a.path for a in client.list_artifacts(run_id, "model")]
            assert "model/model.weights.h5" in listed, (listed, sync.stdout, sync.stderr[-2000:])
            assert any(artifacts.rglob("model.weights.h5"))
        assert not spool.exists()  # delivered, so dropped


def test_basic_auth_refuses_requests_without_credentials(tmp_path):
    password = secrets.token_urlsafe(16)
    config = tmp_path / "auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = dict(
        os.environ,
        MLFLOW_AUTH_CONFIG_PATH=str(config),
        MLFLOW_AUTH_ADMIN_PASSWORD=password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),  # CSRF; required by MLflow 3.17
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search"
    body = json.dumps({"max_results": 10}).encode()

    def post(user: str | None, secret: str | None) -> int:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        if user is not None and secret is not None:
            token = base64.b64encode(f"{user}:{secret}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    with mlflow_server(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        tmp_path / "artifacts",
        port,
        "--app-name",
        "basic-auth",
        env=env,
    ):
        assert post(None, None) == 401
        assert post("admin", "wrong") == 401
        assert post("admin", password) == 200
        # mltrack itself gets in with MLflow's standard credential variables.
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            "admin",
            password,
        )
        try:
            from mltrack.run import start_run

            with start_run("auth-check", tracking_uri=f"http://127.0.0.1:{port}") as run:
                run.end_epoch(0, {"loss": 1.0})
            assert (
                MlflowClient(f"http://127.0.0.1:{port}").get_run(run.run_id).info.status
                == "FINISHED"
            )
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
