"""The compose topology's promises, checked on the files (no Docker engine runs on CI).

The same topology without Docker (PostgreSQL + mlflow server + workers) is exercised for real
by tests/test_server.py and tests/test_sweep_runs.py.
"""

from __future__ import annotations

from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_database_is_on_a_named_volume_and_never_published():
    services = compose()["services"]
    postgres = services["postgres"]
    assert "ports" not in postgres
    assert any(v.startswith("pgdata:") for v in postgres["volumes"])
    assert "pgdata" in compose()["volumes"]


def test_tracking_server_has_auth_proxied_artifacts_health_and_loopback_port():
    mlflow = compose()["services"]["mlflow"]
    command = " ".join(mlflow["command"].split())
    assert "--app-name basic-auth" in command and "--artifacts-destination /artifacts" in command
    # The store's URI holds the database password: by environment, on no command line (ps).
    assert "postgresql://" not in command
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert mlflow["ports"] == ["127.0.0.1:5000:5000"]
    assert "healthcheck" in mlflow and mlflow["depends_on"]["postgres"]["condition"] == (
        "service_healthy"
    )
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${")


def test_workers_scale_and_share_one_study():
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N works
    command = " ".join(worker["command"].split())
    assert command.startswith("mltrack sweep") and "postgresql://" not in command
    assert worker["environment"]["OPTUNA_STORAGE"].endswith("@postgres:5432/optuna")
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_env_example_holds_no_real_secrets_and_env_is_ignored():
    values = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for key in ("POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY"):
        assert values[key].startswith("change-me"), key
    gitignore = (DOCKER.parent / ".gitignore").read_text().splitlines()
    assert "docker/.env" in gitignore


def test_image_builds_cpu_by_default_and_cuda_by_argument():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in dockerfile and '"$VARIANT" = "cuda"' in dockerfile
    assert "USER mltrack" in dockerfile
