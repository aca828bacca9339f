"""Where the tracking store is: ``--tracking-uri``, ``MLFLOW_TRACKING_URI`` or the embedded
default, and where an embedded store keeps its artifacts."""

from __future__ import annotations

import os
from pathlib import Path

from mltrack.errors import UsageError
from mltrack.tracking.limits import userinfo_problem

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


def which_tracking_uri(uri: str | None = None) -> str:
    """``--tracking-uri`` over ``MLFLOW_TRACKING_URI`` over the embedded sqlite store.

    ``UsageError`` for a URI whose user name or password is not percent-encoded (a parser
    would read a part of the password as the host; the error never shows the password)."""
    found = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    problem = userinfo_problem("--tracking-uri" if uri else "MLFLOW_TRACKING_URI", found)
    if problem:
        raise UsageError(problem)
    return found


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The store ``which_tracking_uri`` names, with an embedded store's folder created."""
    resolved = which_tracking_uri(uri)
    db = sqlite_path(resolved)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return resolved


def sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's SQLAlchemy store's


def is_database(uri: str) -> bool:
    """Whether ``uri`` names a database (``postgresql+psycopg://...`` included)."""
    return uri.partition(":")[0].partition("+")[0] in DATABASES


def default_artifact_location(uri: str) -> str | None:
    """Artifacts of an sqlite store live beside the database (``mlruns/artifacts``).

    A tracking server decides for itself (proxied artifacts), so nothing is set there.
    """
    db = sqlite_path(uri)
    return (db.parent.resolve() / "artifacts").as_uri() if db is not None else None
