"""``mltrack ui`` serves the same store the experiments write to, on loopback."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import urllib.request

import psutil

from mltrack.tracking.run import start_run
from tests.conftest import http_get, ui_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ui_serves_the_store_on_loopback(store, tmp_path):
    with start_run("ui-exp", run_name="visible-run", tracking_uri=store) as run:
        run.end_epoch(0, {"loss": 0.5})
    with ui_server(store, tmp_path) as base:
        port = int(base.rsplit(":", 1)[1])
        status, body = http_get(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-exp"
        )
        assert status == 200
        experiment_id = json.loads(body)["experiment"]["experiment_id"]
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            method="POST",
            data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.loads(response.read())["runs"]
        assert [r["info"]["run_name"] for r in runs] == ["visible-run"]
        # Bound to loopback only: not reachable on the machine's other addresses.
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        bound = [line.split()[3] for line in listening.splitlines() if f":{port}" in line]
        assert bound and all(addr.startswith("127.0.0.1:") for addr in bound), bound
        # The store (a URI that may hold a password) reaches MLflow by environment: on no
        # process's command line (`ps` shows them to every user).
        lines = [" ".join(p.info["cmdline"] or ()) for p in psutil.process_iter(["cmdline"])]
        serving = [line for line in lines if "mlflow" in line and str(port) in line]
        assert serving and not [line for line in serving if "mlflow.db" in line], serving
        # Without MLflow's GenAI job runner (its Huey consumers start with the server).
        [ui] = [
            p
            for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [])[-4:] == ["--host", "127.0.0.1", "--port", str(port)]
        ]
        jobs = []
        for child in ui.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a child that ended meanwhile
                jobs.append(" ".join(child.cmdline()))
        assert jobs and not [line for line in jobs if "huey" in line], jobs


def test_help_is_fast_and_lists_ui():
    result = subprocess.run(
        [sys.executable, "-m", "mltrack.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "ui" in result.stdout
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, mltrack.cli; print(sorted("
            "m for m in ('tensorflow', 'torch', 'keras', 'mlflow') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert heavy.stdout.strip() == "[]"
