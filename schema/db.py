"""Engines and sessions, the same code for Postgres and SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from docbatch.schema.settings import Settings

# Every statement planned for its own parameters and the tables' current size: psycopg
# prepares nothing server-side. Prepared after a few runs, a statement could keep one
# generic plan made while a job's tables were nearly empty: a claim's or a close's
# "documents of this unit without a result" check stayed a sequential scan of ``results``
# that grew with the job (each unit slower than the one before) until an ANALYZE, which
# a database without autovacuum never gets. A client-side setting, so a transaction-mode
# PgBouncer in front (docs/operations/sizing.md) needs nothing more; planning each
# statement costs a few tenths of a millisecond.
PLANNING = {"prepare_threshold": None}


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the api read while a worker writes; processes share the file.
            # pysqlite's own transaction handling would fight the BEGIN IMMEDIATE below.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Take the write lock at BEGIN so two writers never deadlock on an upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        connect_args=dict(PLANNING),
    )


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine(settings: Settings) -> Engine:
    """The engine for ``settings``' database."""
    return engine_for(settings.database_url)


def lease_url(settings: Settings) -> str:
    """The URL for connections that hold session-level advisory locks (a worker's unit
    leases, the cancel sweep's and the delete's per-job locks): DOCBATCH_LEASE_DATABASE_URL,
    else the database URL. Such a lock lives as long as its server session, so it must not
    go through a transaction-mode pooler, which hands the session to other clients between
    transactions (docs/scaling.md)."""
    return settings.lease_database_url or settings.database_url


def get_lease_engine(settings: Settings) -> Engine:
    """The pooled engine on ``lease_url``: for work that holds a session-level advisory
    lock on one connection across transactions (``worker/cancel.py``, ``worker/deletion.py``).
    A connection goes back to this pool only once its lock is released."""
    return engine_for(lease_url(settings))


@lru_cache(maxsize=4)
def _sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=engine_for(url), expire_on_commit=False)


def new_session(settings: Settings) -> Session:
    """A session on ``settings``' database. Settings are read at the entry points (the
    CLI, worker/tasks.py, api/deps.py) and passed down, so two configurations in one
    process (``docbatch run``, tests) never meet in one database URL."""
    return _sessionmaker(settings.database_url)()


@contextmanager
def transaction(settings: Settings) -> Iterator[Session]:
    """A session whose work commits at the end of the block, or rolls back on error."""
    with new_session(settings) as session, session.begin():
        yield session


def insert_ignore(session: Session, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the session's dialect."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing()


def is_sqlite(settings: Settings) -> bool:
    return settings.database_url.startswith("sqlite")
