"""This process's unit leases: advisory locks held on one dedicated connection.

A unit this worker runs (or claimed ahead) is covered by a lease (docbatch.domain.leases:
a Postgres advisory lock on the worker's own connection, gone the instant the process
or its connection dies). Claims are made on this same connection (``transaction``), so
the lease this process holds never reads as "held elsewhere" to its own claim, while
any other worker's claim of the unit is skipped. Every unit leased is heartbeated and,
while it computes, timed by ``holdings`` (docbatch.worker.heartbeat). SQLite has no
leases (``docbatch run``: one worker per task, nothing to race).

A cut connection drops every lease on it while the worker, alive, goes on computing its
units. The connection is therefore checked at every heartbeat (and before every use):
once it is found broken, a new one is opened and the lease of every unit still held is
taken again on it. A unit whose lease another worker took in between (its message
reached a worker that saw no lease) is *lost*: this worker stops it and writes nothing
of it (``Holdings.lost``), the other worker runs it.

The lease connection goes to DOCBATCH_LEASE_DATABASE_URL (``lease_url``; default the
database URL): a session-level lock needs a server session of its own, which a
transaction-mode pooler in front of the rest (DOCBATCH_DATABASE_URL) would not give it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
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

log = logging.getLogger("docbatch.worker")


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
        self.engine = _lease_engine(
            lease_url(settings), settings.running_lease_seconds, settings.worker_task
        )
        self.conn: Connection = self.engine.connect()
        self.lock = threading.RLock()
        self.holdings = Holdings(settings, check=self.keep)
        self.reconnects = 0

    def _try_lock(self, fn: str, unit_id: int) -> bool:
        ns, key = lease_key(unit_id)
        got = self.conn.execute(text(f"SELECT {fn}(:ns, :key)"), {"ns": ns, "key": key})
        value = bool(got.scalar())
        self.conn.commit()
        return value

    def _call(self, fn: str, unit_id: int) -> bool:
        with self.lock:
            self._reconnect_if_broken()
            try:
                return self._try_lock(fn, unit_id)
            except Exception:
                if not self.broken:
                    raise
            # Cut while idle (between two units, no heartbeat to notice): once more on a
            # new connection.
            self._reconnect()
            return self._try_lock(fn, unit_id)

    def keep(self) -> None:
        """Check the connection (each heartbeat): if it was cut, open a new one and take
        the lease of every unit still held again. Raises if the database does not
        answer (the next beat tries again)."""
        with self.lock:
            if not self.broken:
                try:
                    self.conn.exec_driver_sql("SELECT 1")
                    self.conn.rollback()
                    return
                except Exception as exc:
                    log.warning("lease connection lost (%s): reconnecting", exc)
            self._reconnect()

    def _reconnect_if_broken(self) -> None:
        if self.broken:
            self._reconnect()

    def _reconnect(self) -> None:
        """A new connection, and on it the lease of every unit held; a unit whose lease
        another session holds by now is lost (its worker stops it, writes nothing)."""
        with contextlib.suppress(Exception):
            self.conn.invalidate()
            self.conn.close()
        self.conn = self.engine.connect()
        self.reconnects += 1
        held = self.holdings.held()
        lost = [u for u in held if not self._try_lock("pg_try_advisory_lock", u)]
        for unit_id in lost:
            self.holdings.lose(unit_id)
        log.warning(
            "lease connection replaced: leases of %d units taken again%s",
            len(held) - len(lost),
            f"; units {sorted(lost)} are held by another worker now: stopped" if lost else "",
        )

    def acquire(self, unit_id: int) -> bool:
        """Take the unit's lease; False when another live worker holds it."""
        got = self._call("pg_try_advisory_lock", unit_id)
        if got:
            self.holdings.hold(unit_id)
        return got

    def release(self, unit_id: int) -> None:
        lost = self.holdings.is_lost(unit_id)
        self.holdings.release(unit_id)
        if not lost:  # a lost unit's lease is another session's
            self._call("pg_advisory_unlock", unit_id)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work on the lease connection (lease checks there are re-entrant)."""
        with self.lock:
            self._reconnect_if_broken()
            with unit_of_work(self.settings, bind=self.conn) as session:
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
    """This process's lease connection (opened on first use; after it broke, opened again
    with the leases of the units still held)."""
    global _lease
    if _lease is not None and not _same_databases(_lease.settings, settings):
        _lease.close()
        _lease = None
    if _lease is None:
        _lease = Lease(settings)
    elif _lease.broken:
        with _lease.lock:
            _lease._reconnect_if_broken()
    return _lease


def drop_lease() -> None:
    """After an error that may be on the lease connection: a new connection, the leases
    of the units still held taken again on it (none are, between two tasks: then it is
    simply closed and opened again on first use)."""
    global _lease
    if _lease is None:
        return
    if not _lease.holdings.held():
        _lease.close()
        _lease = None
        return
    with contextlib.suppress(Exception), _lease.lock:
        _lease._reconnect()


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
