"""A real ``mlflow server`` on a real PostgreSQL, both started here on 127.0.0.1.

The shared topology of docs/stores.md ("Shared deployment") without Docker: nothing a worker
measured is lost while the server is away, and nobody without credentials gets in.
"""

from __future__ import annotations

import base64
import contextlib
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

import psutil
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
    # As docker/compose.yaml runs it: without the Huey consumers of MLflow's GenAI jobs.
    env = {**(env or os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("ab") as output:
        proc = subprocess.Popen(
            command,
            env=env,
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
        # ProcessLookupError: the test stopped the server itself and its group is gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def journal_records(folder: Path) -> list[dict]:
    """Every record in the journals under ``folder`` (what a run wrote ahead of delivery)."""
    from mltrack.tracking import spool

    return [r for path in spool.pending(folder) for r in spool.read(path)[1]]


def journaled_tag(folder: Path, key: str) -> bool:
    try:
        return any(key in r.get("values", {}) for r in journal_records(folder))
    except (OSError, ValueError):  # a line being written
        return False


def sync(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mltrack.cli", "sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_outage_spanning_tags_and_export_on_default_retries_delivers_all_exactly_once(
    tmp_path, monkeypatch
):
    """MLflow's own retry settings, untouched: the server goes away before the last epochs
    and stays away until the model is exported and its ``reload_ok`` tag logged."""
    epochs = 8
    with postgres_server(("mlflow",)) as pg:
        backend, artifacts, port = f"{pg}/mlflow", tmp_path / "artifacts", free_port()
        uri = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # MLflow finds logged models with it
        env = dict(env_for(tmp_path), MLTRACK_SPOOL_DIR=str(tmp_path / "spool"))
        client = MlflowClient(tracking_uri=uri)
        with mlflow_server(backend, artifacts, port) as server:
            training = start_training(
                tmp_path,
                *("--synthetic-size", "1024", "--batch-size", "64", "--epochs", str(epochs)),
                *("--tracking-uri", uri),
                env=env,
                stderr=subprocess.PIPE,
            )
            wait_until(lambda: epochs_logged(client) >= 2, 240, "two epochs on the server")
            [run] = client.search_runs([client.get_experiment_by_name("cifar_amp").experiment_id])
            run_id = run.info.run_id
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        down = time.time()
        wait_until(lambda: journaled_tag(tmp_path / "spool", "reload_ok"), 300, "the export")
        time.sleep(max(0.0, 20 - (time.time() - down)))
        assert training.poll() in (None, 0), "training must not fail because the server is away"
        with mlflow_server(backend, artifacts, port):
            up = time.time()
            _, stderr = training.communicate(timeout=600)
            assert training.returncode == 0, stderr[-3000:]
            synced = sync(env)
            assert synced.returncode == 0, synced.stdout + synced.stderr
            # The command returned once its end was journaled with the store still away; its
            # writer or this sync delivered the rest.
            assert "synced from" in synced.stdout
            run = client.get_run(run_id)
            assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
            for key in ("keras.dtype_policy", "keras.variable_dtypes", "reload_formats"):
                assert run.data.tags[key], key
            assert run.data.tags["reload_ok"] == "true"
            for key in ("loss", "val_loss", "epoch_wall_s"):
                steps = [m.step for m in client.get_metric_history(run_id, key)]
                assert sorted(steps) == list(range(epochs)), (key, sorted(steps))
            [check] = client.get_metric_history(run_id, "reload_max_abs_diff")
            assert down < check.timestamp / 1000 < up  # the export happened during the outage
            listed = sorted(a.path for a in client.list_artifacts(run_id, "model"))
            seed = ["model/model.json", "model/model.weights.h5", "model/summary.txt"]
            assert {*seed, "model/MLmodel", "model/code"} <= set(listed), listed
            [mlmodel] = artifacts.rglob("MLmodel")
            on_disk = sorted(p.name for p in artifacts.rglob("*") if p.is_file())
            assert on_disk == sorted(p.name for p in mlmodel.parent.rglob("*") if p.is_file())
            assert {"model.json", "model.weights.h5", "pyfunc_model.py"} <= set(on_disk)
        assert not list((tmp_path / "spool").glob("*"))


def test_sigkill_while_the_server_is_down_then_sync_delivers_every_journaled_point(tmp_path):
    with postgres_server(("mlflow",)) as pg:
        backend, artifacts, port = f"{pg}/mlflow", tmp_path / "artifacts", free_port()
        uri = f"http://127.0.0.1:{port}"
        spool = tmp_path / "spool"
        env = dict(env_for(tmp_path), MLTRACK_SPOOL_DIR=str(spool))
        client = MlflowClient(tracking_uri=uri)
        with mlflow_server(backend, artifacts, port) as server:
            training = start_training(
                tmp_path,
                *("--synthetic-size", "1024", "--batch-size", "64", "--epochs", "500"),
                *("--tracking-uri", uri),
                env=env,
            )
            wait_until(lambda: epochs_logged(client) >= 2, 240, "two epochs on the server")
            [run] = client.search_runs([client.get_experiment_by_name("cifar_amp").experiment_id])
            run_id = run.info.run_id
            stored_before = epochs_logged(client)
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)

        def journaled_epochs() -> int:
            try:
                return sum(r.get("key") == "loss" for r in journal_records(spool))
            except (OSError, ValueError):
                return 0

        wait_until(lambda: journaled_epochs() >= stored_before + 2, 240, "epochs journaled")
        training.kill()  # SIGKILL: no handler, no flush, no end
        training.wait(timeout=30)
        points = {
            (r["key"], r["step"], r["value"])
            for r in journal_records(spool)
            if r["type"] == "metric"
        }
        with mlflow_server(backend, artifacts, port):
            synced = sync(env)
            assert synced.returncode == 0, synced.stdout + synced.stderr
            assert "1 of 1 journal(s)" in synced.stdout
            stored = {
                (m.key, m.step, m.value)
                for key in {k for k, _, _ in points}
                for m in client.get_metric_history(run_id, key)
            }
            assert points <= stored, sorted(points - stored)[:5]
            losses = [m.step for m in client.get_metric_history(run_id, "loss")]
            assert len(losses) == len(set(losses)) >= stored_before + 2  # each epoch once
            run = client.get_run(run_id)
            assert run.info.status == "KILLED" and run.data.tags["outcome"] == "killed"
            assert f"process {training.pid}" in run.data.tags["error"]
        assert not list(spool.glob("*"))


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
            from mltrack.tracking.run import start_run

            with start_run("auth-check", tracking_uri=f"http://127.0.0.1:{port}") as run:
                run.end_epoch(0, {"loss": 1.0})
            assert (
                MlflowClient(f"http://127.0.0.1:{port}").get_run(run.run_id).info.status
                == "FINISHED"
            )
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]


def test_planted_passwords_reach_no_param_tag_or_artifact(tmp_path):
    """A sweep against a basic-auth server with the password in --tracking-uri, and with a
    password in its PostgreSQL --storage URL: neither is logged anywhere."""
    # The database password holds what a URL's userinfo may hold raw and SQLAlchemy accepts
    # (issue 18: one with "/" leaked); the admin's what the http URL parser accepts.
    admin_password = secrets.token_urlsafe(12) + "!$&'()*+,;="
    db_password = secrets.token_urlsafe(12) + "/k+Q:z!$&'()*,;=[]"
    config = tmp_path / "auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    server_env = dict(
        os.environ,
        MLFLOW_AUTH_CONFIG_PATH=str(config),
        MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
    )
    port = free_port()
    with (
        postgres_server(("optuna",)) as pg,
        mlflow_server(
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            tmp_path / "artifacts",
            port,
            "--app-name",
            "basic-auth",
            env=server_env,
        ),
    ):
        # trust authentication: PostgreSQL ignores the password, mltrack must not log it. The
        # storage goes by OPTUNA_STORAGE, as Optuna's CLI takes it: on no command line.
        storage = pg.replace("mltrack@", f"mltrack:{db_password}@") + "/optuna"
        tracking = f"http://admin:{admin_password}@127.0.0.1:{port}"
        command = [
            *(sys.executable, "-m", "mltrack.cli", "sweep"),
            *("experiments.fashion_mnist_precision", "--dataset", "digits", "--no-export"),
            *("--epochs", "1", "--trials", "2"),
            *("--tracking-uri", tracking, "--sampler", "random", "--pruner", "none"),
        ]
        sweep = subprocess.Popen(
            command,
            cwd=tmp_path,
            env={**env_for(tmp_path), "OPTUNA_STORAGE": storage},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        on_command_lines: set[tuple[int, str]] = set()
        # A child between fork and exec still shows its parent's command line (seen when the
        # peak calibration's subprocess started): that is the sweep's own line, not a new one.
        own = " ".join(command)
        while sweep.poll() is None:
            for process in psutil.process_iter(["pid", "cmdline"]):
                line = " ".join(process.info["cmdline"] or ())
                for secret in (admin_password, db_password):
                    if secret in line and line != own:
                        on_command_lines.add((process.info["pid"], line))
            time.sleep(0.2)
        out, err = sweep.communicate()
        result = subprocess.CompletedProcess(sweep.args, sweep.returncode, out, err)
        assert not on_command_lines  # only the sweep's own, where the test put the admin's
        assert result.returncode == 0, result.stderr[-3000:]
        for secret in (admin_password, db_password):
            assert secret not in result.stdout + result.stderr
        client = MlflowClient(tracking_uri=tracking)
        experiment = client.get_experiment_by_name("fashion_mnist_precision")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 3  # the parent and two trials
        parent = next(r for r in runs if r.data.tags.get("mltrack.role") == "study")
        assert parent.data.params["sweep.storage"].startswith("postgresql://mltrack:<redacted>@")
        for run in runs:
            values = [*run.data.params.values(), *run.data.tags.values()]
            leaked = [v for v in values if admin_password in v or db_password in v]
            assert not leaked, (run.info.run_name, leaked)
            folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
            for path in (p for p in folder.rglob("*") if p.is_file()):
                data = path.read_bytes()
                assert admin_password.encode() not in data and db_password.encode() not in data
