"""Opening a store or a study storage that may not exist yet, from many processes at once.

MLflow's SQLAlchemy store and Optuna's ``RDBStorage`` create their tables and run their
migrations the first time a process opens a new database, without a lock: three trainings
started together on a new sqlite file all crashed with alembic tracebacks ("table
latest_metrics already exists") and left ``_alembic_tmp_*`` tables that broke every later
command; two sweep workers on a new storage failed with "UNIQUE constraint failed:
alembic_version" (issue 18). Here the first open of each database is serialised:

- sqlite: a file lock beside the database (``<file>.lock``, the ``filelock`` package);
- PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) on a connection of its own;
- any other database: the open is retried a few times, a second apart.

Whoever takes the lock first creates and migrates; the others wait, then find the tables made
and only check them. A database left half-migrated by processes that raced before this existed
is recognised by its leftover ``_alembic_tmp_*`` tables and reported in one line with its
repair.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Callable, Iterator
from typing import TypeVar

from mltrack.errors import UsageError
from mltrack.tracking.limits import redact_uri
from mltrack.tracking.uris import sqlite_path

T = TypeVar("T")
WAIT_S = 300.0  # a migration of MLflow's ~80 tables takes 2-5 s; a lock held longer is stuck
RETRIES = 5


@contextlib.contextmanager
def creation_lock(uri: str, what: str = "tables") -> Iterator[None]:
    """Hold, across processes, the lock named ``what`` of the database ``uri`` names:
    ``tables`` serialises creating its tables, ``parent`` creating a sweep's parent run.
    Do not nest two of them in one process (the inner one would wait for the outer).

    Raises ``UsageError`` if another process holds it for ``WAIT_S`` seconds.
    """
    db = sqlite_path(uri)
    if db is not None:
        from filelock import FileLock, Timeout

        db.parent.mkdir(parents=True, exist_ok=True)
        path = f"{db}.lock" if what == "tables" else f"{db}.{what}.lock"
        try:
            with FileLock(path, timeout=WAIT_S):
                yield
        except Timeout:
            raise UsageError(  # the lock dies with its process: a live one holds it
                f"{redact_uri(uri)}: another process has held the lock {path} for "
                f"{WAIT_S:.0f} s; find it with `fuser {path}`"
            ) from None
        return
    if uri.startswith("postgresql"):
        with _advisory_lock(uri, what):
            yield
        return
    yield


@contextlib.contextmanager
def _advisory_lock(uri: str, what: str) -> Iterator[None]:
    import sqlalchemy

    key = zlib.crc32(f"mltrack: {what}".encode())  # the same key in every process
    engine = sqlalchemy.create_engine(
        uri, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 10}
    )
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


def open_once(uri: str, open_: Callable[[], T]) -> T:
    """``open_()`` (which creates the database's tables if it must) under ``creation_lock``.

    Databases without a lock of their own get ``RETRIES`` attempts. A database left
    half-migrated is a ``UsageError`` saying how to repair it; other errors propagate.
    """
    attempts = 1 if sqlite_path(uri) is not None or uri.startswith("postgresql") else RETRIES
    for attempt in range(attempts):
        try:
            with creation_lock(uri):
                return open_()
        except UsageError:
            raise
        except Exception:
            leftovers = half_migrated(uri)
            if leftovers:
                raise UsageError(repair_hint(uri, leftovers)) from None
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def half_migrated(uri: str) -> list[str]:
    """The ``_alembic_tmp_*`` tables an interrupted migration left in ``uri``'s database."""
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return []
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        try:
            names = sqlalchemy.inspect(engine).get_table_names()
        finally:
            engine.dispose()
    except Exception:
        return []
    return sorted(n for n in names if n.startswith("_alembic_tmp_"))


def repair_hint(uri: str, leftovers: list[str]) -> str:
    """One line: what is wrong with the database and the commands that repair it."""
    drops = "; ".join(f"DROP TABLE {name}" for name in leftovers)
    return (
        f"{redact_uri(uri)}: the database was left half-migrated by processes that created it "
        f"at the same time (leftover {', '.join(leftovers)}); back it up, run `{drops}` in it, "
        f"then `mlflow db upgrade {redact_uri(uri)}` (a study storage: "
        f"`optuna storage upgrade --storage {redact_uri(uri)}`), or move it aside if it is empty"
    )
