"""This process's unit leases: advisory locks held on one dedicated connection.

A unit this worker runs (or claimed ahead) is covered by a lease (docbatch.domain.leases:
a Postgres advisory lock on the worker's own connection, gone the instant the process
or its connection dies). Claims are made on this same connection (``transaction``), so
the lease this process holds never reads as "held elsewhere" to its own claim, while
any other worker's claim of the unit is skipped. Every unit leased is heartbeated and,
while it computes, timed by ``holdings`` (docbatch.worker.heartbeat). SQLite has no
leases (``docbatch run``: one worker per task, nothing to race).

The lease connection goes to DOCBATCH_LEASE_DATABASE_URL (``lease_url``; default the
database URL): a session-level lock needs a server session of its own, which a
transaction-mode pooler in front of the rest (DOCBATCH_DATABASE_URL) would not give it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from docbatch.domain.leases import keepalive_connect_args, lease_key
from docbatch.domain.outbox import unit_of_work
from docbatch.domain.presence import application_name
from docbatch.schema.db import lease_url
from docbatch.schema.settings import Settings
from docbatch.worker.heartbeat import Holdings


@functools.lru_cache(maxsize=4)
def _lease_engine(url: str, lease_seconds: float, serves: str) -> Engine:
    # Its own engine, unpooled: the lease connection is never shared, and it carries
    # keepalives so a host that vanishes frees its leases within about a lease period.
    # Named after the deployment it serves: its presence is that worker's (domain/presence.py).
    args = keepalive_connect_args(lease_seconds)
    if serves:
        args["application_name"] = application_name(serves)
    return create_engine(url, poolclass=NullPool, connect_args=args)


class Lease:
    """The process's lease connection and the units it holds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        engine = _lease_engine(
            lease_url(settings), settings.running_lease_seconds, settings.worker_task
        )
        self.conn: Connection = engine.connect()
        self.lock = threading.Lock()
        self.holdings = Holdings(settings)

    def _call(self, fn: str, unit_id: int) -> bool:
        ns, key = lease_key(unit_id)
        with self.lock:
            got = self.conn.execute(text(f"SELECT {fn}(:ns, :key)"), {"ns": ns, "key": key})
            value = bool(got.scalar())
            self.conn.commit()
        return value

    def acquire(self, unit_id: int) -> bool:
        """Take the unit's lease; False when another live worker holds it."""
        got = self._call("pg_try_advisory_lock", unit_id)
        if got:
            self.holdings.hold(unit_id)
        return got

    def release(self, unit_id: int) -> None:
        self.holdings.release(unit_id)
        self._call("pg_advisory_unlock", unit_id)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work on the lease connection (lease checks there are re-entrant)."""
        with self.lock, unit_of_work(self.settings, bind=self.conn) as session:
            yield session

    @property
    def broken(self) -> bool:
        return self.conn.closed or self.conn.invalidated

    def close(self) -> None:
        """Drop the connection itself: every lease goes with it."""
        self.holdings.close()
        with contextlib.suppress(Exception):
            self.conn.invalidate()
            self.conn.close()


_lease: Lease | None = None


def _same_databases(a: Settings, b: Settings) -> bool:
    # The lease connection's URL, and the database URL its units' heartbeats and writes use.
    return (lease_url(a), a.database_url) == (lease_url(b), b.database_url)


def get_lease(settings: Settings) -> Lease:
    """This process's lease connection (opened on first use, again after it broke)."""
    global _lease
    if _lease is None or _lease.broken or not _same_databases(_lease.settings, settings):
        if _lease is not None:
            _lease.close()
        _lease = Lease(settings)
    return _lease


def drop_lease() -> None:
    """Close the lease connection (after an error on it): every lease it held goes."""
    global _lease
    if _lease is not None:
        _lease.close()
        _lease = None


class Unleased:
    """SQLite's stand-in for ``Lease`` (``docbatch run``): one worker per task runs every
    unit it claims, so nothing needs locking; its units are heartbeated all the same."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.holdings = Holdings(settings)

    def acquire(self, unit_id: int) -> bool:
        self.holdings.hold(unit_id)
        return True

    def release(self, unit_id: int) -> None:
        self.holdings.release(unit_id)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        with unit_of_work(self.settings) as session:
            yield session


_unleased: Unleased | None = None


def holder_for(settings: Settings) -> Lease | Unleased:
    """What covers the units this process holds: the lease connection on Postgres, the
    heartbeat alone on SQLite."""
    global _unleased
    if not settings.database_url.startswith("sqlite"):
        return get_lease(settings)
    if _unleased is None or not _same_databases(_unleased.settings, settings):
        _unleased = Unleased(settings)
    return _unleased
