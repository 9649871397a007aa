"""Unit leases: a worker that runs a unit holds a Postgres advisory lock on it.

A pipelined worker claims its next unit straight from Postgres while the model runs
(docbatch.worker.runner), so a unit can be ``running`` while its queue message is still
in Redis. When that message reaches another worker, ``ledger.claim_unit`` must tell
"running on a live worker" (skip) from "running on a worker that died" (reclaim): the
lease answers. It is a session-level advisory lock held on the worker's own
connection, so it disappears the moment the worker process (or its connection) dies.
On SQLite there are no leases: every unit is run by the one worker that claims it.

A host that vanishes (power, network) sends nothing more: the server keeps its session,
and so its leases, until TCP gives up on it, about two hours by default. The lease
connection therefore asks the server for keepalives sized to
DOCBATCH_RUNNING_LEASE_SECONDS (``keepalive_connect_args``), so a lost host frees its
units within about one lease period.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from docbatch.schema.db import PLANNING

NAMESPACE = 0x6462  # first key of the two-int advisory lock: "db"


def lease_key(unit_id: int) -> tuple[int, int]:
    return NAMESPACE, int(unit_id) & 0x7FFFFFFF


KEEPALIVE_PROBES = 4


def keepalive_timings(lease_seconds: float) -> dict[str, int]:
    """TCP keepalive timings (seconds) under which a silent peer is dropped after about
    ``lease_seconds``: idle half the lease, then ``KEEPALIVE_PROBES`` probes spread over
    the other half."""
    idle = max(1, int(lease_seconds / 2))
    interval = max(1, int(lease_seconds / (2 * KEEPALIVE_PROBES)))
    return {"idle": idle, "interval": interval, "count": KEEPALIVE_PROBES}


def connect_timeout(lease_seconds: float) -> int:
    """Seconds the lease connection waits for a server to answer while connecting."""
    return max(2, int(lease_seconds / 4))


def keepalive_connect_args(lease_seconds: float) -> dict[str, Any]:
    """libpq connect arguments for the lease connection: keepalives on the client socket
    (the worker notices a dead server) and, through ``options``, on the server's socket
    (the server drops a dead worker's session and its advisory locks); no server-side
    prepared statements, as on every docbatch connection (docbatch.schema.db.PLANNING)."""
    t = keepalive_timings(lease_seconds)
    server = (
        f"-c tcp_keepalives_idle={t['idle']} -c tcp_keepalives_interval={t['interval']} "
        f"-c tcp_keepalives_count={t['count']} "
        f"-c tcp_user_timeout={int(lease_seconds * 1000)}"
    )
    return {
        "keepalives": 1,
        "keepalives_idle": t["idle"],
        "keepalives_interval": t["interval"],
        "keepalives_count": t["count"],
        "tcp_user_timeout": int(lease_seconds * 1000),
        # A reconnect (the heartbeat re-takes the leases after a cut) to a server that
        # does not answer gives up within a quarter lease instead of blocking the
        # heartbeat thread, and the time-limit watchdog beside it, for minutes.
        "connect_timeout": connect_timeout(lease_seconds),
        "options": server,
        **PLANNING,
    }


def held_elsewhere(session: Session, unit_id: int) -> bool:
    """True when another live session holds ``unit_id``'s lease (never on SQLite).

    A transaction-level try-lock: re-entrant for the session that holds the lease,
    released at the end of the caller's transaction.
    """
    if session.get_bind().dialect.name != "postgresql":
        return False
    ns, key = lease_key(unit_id)
    got = session.execute(
        text("SELECT pg_try_advisory_xact_lock(:ns, :key)"), {"ns": ns, "key": key}
    ).scalar()
    return not got


def orphaned(
    session: Session, queue: str | None, silent_since: dt.datetime
) -> list[tuple[int, str]]:
    """(id, queue) of units of ``queue`` (None: of every queue) marked running whose
    lease no session holds and that nothing claimed or heartbeated since
    ``silent_since``: their worker died (a unit is marked running only under its lease,
    and closed before the lease goes). A lease alone is not enough: a cut database
    connection drops it while its worker, alive, keeps computing and heartbeating the
    unit; taken back then, the unit would be charged an attempt for every cut
    (docbatch.domain.retry). Never any on SQLite, which has no leases (its heartbeats
    and the reconciler cover it).

    ``pg_locks`` is server-wide, so ``session`` may come through a transaction-mode
    pooler (DOCBATCH_DATABASE_URL) while the leases sit on direct connections
    (DOCBATCH_LEASE_DATABASE_URL), as long as both reach the same server: read from
    another (a replica), every running unit would look orphaned."""
    if session.get_bind().dialect.name != "postgresql":
        return []
    rows = session.execute(
        text(
            "SELECT u.id, u.queue FROM units u WHERE u.state = 'running' "
            "AND (CAST(:queue AS VARCHAR) IS NULL OR u.queue = :queue) "
            "AND u.claimed_at < :silent AND (u.heartbeat_at IS NULL OR u.heartbeat_at < :silent) "
            "AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.objsubid = 2 AND l.classid = :ns "
            "AND l.objid = (u.id & 2147483647)::bigint::oid "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
        ),
        {"queue": queue, "ns": NAMESPACE, "silent": silent_since},
    ).all()
    return [(int(r[0]), str(r[1])) for r in rows]
