"""Unit leases: a worker that runs a unit holds a Postgres advisory lock on it.

A pipelined worker claims its next unit straight from Postgres while the model runs
(worker/pipeline.py), so a unit can be ``running`` while its queue message is still
in Redis. When that message reaches another worker, ``ledger.claim_unit`` must tell
"running on a live worker" (skip) from "running on a worker that died" (reclaim): the
lease answers. It is a session-level advisory lock held on the worker's own
connection, so it disappears the moment the worker process (or its connection) dies.
On SQLite there are no leases: every unit is run by the one worker that claims it.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

NAMESPACE = 0x6462  # first key of the two-int advisory lock: "db"


def lease_key(unit_id: int) -> tuple[int, int]:
    return NAMESPACE, int(unit_id) & 0x7FFFFFFF


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
