"""Reading a database-backed MLflow store (sqlite, PostgreSQL) without MLflow's store.

MLflow's ``SqlAlchemyStore`` costs 0.6 s to import and open: its module imports alembic and
MLflow's GenAI judges, and its constructor checks the schema's migrations. A command that only
reads the store (``mltrack compare``) takes a ``DatabaseClient`` from ``reading_client``
instead: experiments and runs read through MLflow's own SQLAlchemy models on an engine of its
own, with the session settings MLflow's store uses, and every other call handed to the real
``MlflowClient``, opened on first use. ``reading_client`` returns the real client wherever the
reader would not read what MLflow's store reads (see there). ``Database`` is where
``mltrack.compare.fetch.read_runs`` reads, through a ``DatabaseClient`` or a ``SqlAlchemyStore``'s
own sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltrack import cache


@dataclass(frozen=True)
class Database:
    """Where ``read_runs`` reads: ``sessions()`` opens a SQLAlchemy session on a store's
    tables (a context manager), ``dialect`` is its SQL dialect (``"sqlite"``,
    ``"postgresql"``, ...), and ``store``, when it came from one, is the ``SqlAlchemyStore``
    whose hook narrows the experiments a query may read (MLflow's workspaces)."""

    sessions: Callable[[], Any]
    dialect: str
    store: Any = None

    @classmethod
    def of(cls, store: Any) -> Database:
        """The database of ``store``, a ``SqlAlchemyStore``, read through its own sessions."""
        return cls(store.ManagedSessionMaker, store._get_dialect(), store)

    def experiment_ids(self, session: Any, ids: list[str]) -> list[Any]:
        from mlflow.utils.validation import _parse_experiment_ids

        parsed = _parse_experiment_ids(ids)
        return parsed if self.store is None else self.store._filter_experiment_ids(session, parsed)


class DatabaseClient:
    """The ``MlflowClient`` of a database-backed store (sqlite, PostgreSQL) for a command that
    only reads it, as ``mltrack compare`` does.

    Experiments and runs are read from the store's tables through MLflow's SQLAlchemy models
    (``mlflow.store.tracking.dbmodels``) on an engine of its own; every other call (a run by
    id, the charts' metric histories, logging the report) goes to the real client,
    ``client()``, opened on first use. What that saves is MLflow's ``SqlAlchemyStore``: its
    module imports alembic and MLflow's GenAI judges, and its constructor checks the schema's
    migrations, 0.6 s of every ``compare`` (issue 21), for a store that a printed comparison
    only reads. Made by ``reading_client``, which returns the real client wherever this one
    cannot answer as it would.
    """

    def __init__(self, database: Database, client: Callable[[], Any]) -> None:
        self.database, self._client = database, client

    def client(self) -> Any:
        """The real ``MlflowClient``."""
        return self._client()

    def __getattr__(self, name: str) -> Any:  # any call not answered here
        return getattr(self.client(), name)

    def search_experiments(self) -> list[Any]:
        """The active experiments, as ``MlflowClient.search_experiments()`` gives them (oldest
        first here; the caller does not depend on the order)."""
        from mlflow.entities import LifecycleStage
        from mlflow.store.tracking.dbmodels.models import SqlExperiment
        from sqlalchemy import select

        with self.database.sessions() as session:
            query = select(SqlExperiment).where(
                SqlExperiment.lifecycle_stage == LifecycleStage.ACTIVE
            )
            found = session.scalars(query.order_by(SqlExperiment.experiment_id)).all()
            return [e.to_mlflow_entity() for e in found]

    def get_experiment_by_name(self, name: str) -> Any:
        """The experiment called ``name``, deleted or not (as MLflow's), or ``None``."""
        from mlflow.store.tracking.dbmodels.models import SqlExperiment
        from sqlalchemy import select

        with self.database.sessions() as session:
            found = session.scalars(select(SqlExperiment).where(SqlExperiment.name == name))
            experiment = found.one_or_none()
            return None if experiment is None else experiment.to_mlflow_entity()


def reading_client(tracking_uri: str, client: Callable[[], Any]) -> Any:
    """A ``DatabaseClient`` of ``tracking_uri`` where it reads what MLflow's store would,
    else ``client()`` (the real ``MlflowClient``, which then refuses or explains the store as
    it always did). For a command that only reads: a database without MLflow's tables (an
    sqlite file not there, empty or another application's) or an sqlite file that is not a
    database is a ``UsageError`` naming ``--tracking-uri``, where the real client would create
    MLflow's tables in it, or print a traceback and leave a lock file.

    The real client is returned for a store that is not a database; MLflow's workspaces, on
    (``MLFLOW_ENABLE_WORKSPACES``: its store narrows what a query reads) or off with
    experiments outside the default workspace (its store refuses to open); and a database
    whose schema is not the installed MLflow's (``alembic_version`` against the head of
    MLflow's migrations, as ``SqlAlchemyStore`` checks it: no MLflow tables, an older schema
    that needs ``mlflow db upgrade``, a newer one). Sessions on sqlite get the pragmas MLflow's
    own sessions set: case-sensitive ``LIKE`` and a 20 s wait for a lock.
    """
    from mltrack.errors import bad_value
    from mltrack.tracking.uris import is_database, sqlite_path

    if not is_database(tracking_uri):
        return client()
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise bad_value("--tracking-uri", tracking_uri, "an existing store: no such file")
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from sqlalchemy import create_engine, exc

    engine = create_engine(tracking_uri)
    problem = _not_a_store(engine)
    if problem:
        engine.dispose()
        raise bad_value("--tracking-uri", tracking_uri, f"an MLflow store: {problem}")
    database = Database(_session_maker(engine), engine.dialect.name)
    try:
        readable = not MLFLOW_ENABLE_WORKSPACES.get() and _reads_as_mlflow(database)
    except exc.SQLAlchemyError:  # no MLflow tables, another application's file, ...
        readable = False
    if not readable:
        engine.dispose()
        return client()
    return DatabaseClient(database, client)


def _not_a_store(engine: Any) -> str:
    """Why the database cannot be an MLflow store, or ``""``: MLflow never created its tables
    in it (no ``alembic_version``, no ``experiments``), or the sqlite file is not a database
    (random bytes, text, a truncated or overwritten file: sqlite's own words). ``""`` also
    when it cannot tell (a lock, a server that does not answer): the real client says why."""
    from sqlalchemy import exc, inspect

    try:
        tables = inspect(engine)
        if tables.has_table("alembic_version") or tables.has_table("experiments"):
            return ""
        return "this database has no MLflow tables"
    except exc.OperationalError:  # locked, unreachable: not the file's content
        return ""
    except exc.DatabaseError as error:
        if engine.dialect.name != "sqlite":
            return ""
        return f"an sqlite database; sqlite says: {str(error.orig).splitlines()[0]}"


SQLITE_PRAGMAS = (  # what MLflow's sessions set on sqlite (mlflow.store.db.utils)
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 20000",
    "PRAGMA case_sensitive_like = true",
)


def _session_maker(engine: Any) -> Callable[[], Any]:
    """Sessions on ``engine`` (context managers) as MLflow's store opens them on sqlite."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    @contextmanager
    def session() -> Iterator[Any]:
        with Session(engine) as opened:
            if engine.dialect.name == "sqlite":
                for pragma in SQLITE_PRAGMAS:
                    opened.execute(text(pragma))
            yield opened

    return session


def _reads_as_mlflow(database: Database) -> bool:
    """Whether ``database`` holds the installed MLflow's schema (``schema_heads``) and no
    experiment outside the default workspace."""
    from mlflow.store.tracking.dbmodels.models import SqlExperiment
    from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME
    from sqlalchemy import select, text

    with database.sessions() as session:
        version = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
        elsewhere = select(SqlExperiment.experiment_id).where(
            SqlExperiment.workspace != DEFAULT_WORKSPACE_NAME
        )
        return schema_heads() == [version] and session.execute(elsewhere.limit(1)).first() is None


def schema_heads() -> list[str]:
    """The head revision(s) of the installed MLflow's database migrations, what
    ``SqlAlchemyStore`` requires a database's ``alembic_version`` to be. Read by alembic from
    MLflow's migration scripts (0.1 s) once per MLflow release and number of scripts, then
    from ``mltrack.cache``."""
    import mlflow

    migrations = Path(mlflow.__file__).parent / "store" / "db_migrations"
    key = f"{mlflow.__version__} {len(list((migrations / 'versions').glob('*.py')))}"
    heads = cache.lookup("mlflow_schema_heads.json", key)
    if heads is None:
        from alembic.script import ScriptDirectory

        heads = ScriptDirectory(str(migrations)).get_heads()
        cache.keep("mlflow_schema_heads.json", key, heads)
    return list(heads)
