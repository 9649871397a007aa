"""Which deployments have a live worker: read from the workers' lease connections.

Every model worker process keeps one Postgres connection open for its unit leases
(docbatch.worker.lease) and names it ``docbatch-worker:<deployment>``
(``application_name``). The connection lives exactly as long as the process (and a
vanished host's within about a lease period), so ``pg_stat_activity`` answers "does any
worker serve deployment X?" with no registry to keep up. A job whose units wait for a
deployment nobody serves says so (``JobPublic.warnings``); its units stay queued.
SQLite (``docbatch run``) has no such view: there the answer is "unknown" (None).
The reader may come through a transaction-mode pooler: the lease connections it looks
for are direct ones (DOCBATCH_LEASE_DATABASE_URL) to the same server.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

PREFIX = "docbatch-worker:"
NAME_MAX = 63  # Postgres truncates application_name to NAMEDATALEN - 1 bytes


def application_name(deployment: str) -> str:
    return (PREFIX + deployment)[:NAME_MAX]


def serving(conn: Connection | Session) -> set[str] | None:
    """The deployments with at least one live worker on this database (None on SQLite)."""
    bind = conn.get_bind() if isinstance(conn, Session) else conn
    if bind.dialect.name != "postgresql":
        return None
    names = conn.execute(
        text(
            "SELECT DISTINCT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE :p"
        ),
        {"p": PREFIX + "%"},
    ).scalars()
    return {n[len(PREFIX) :] for n in names}


def unserved_warnings(
    conn: Connection | Session, waiting: Iterable[str], *, tasks: Iterable[str] = ()
) -> list[str]:
    """One sentence per deployment in ``waiting`` (keys with units still to run) that no
    live worker serves; ``tasks``: the names that are a task's default (``--task``)."""
    waiting = sorted(set(waiting))
    if not waiting:
        return []
    live = serving(conn)
    if live is None:
        return []
    defaults = set(tasks)
    notes = []
    for name in waiting:
        if application_name(name)[len(PREFIX) :] in live:
            continue
        start = f"--task {name}" if name in defaults else f"--deployment {name}"
        notes.append(
            f"no worker serves deployment {name}: its units stay queued until one starts "
            f"(docbatch worker {start})"
        )
    return notes
