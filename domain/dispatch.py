"""The dispatcher: each queue's broker list kept short and filled in fair order.

A job's units are written ``queued`` and stay in Postgres (the **backlog**: queued,
``dispatched_at`` NULL) until the dispatcher sends them. ``top_up`` brings the number of
a queue's units sent and not yet claimed up to DOCBATCH_DISPATCH_DEPTH, taking them in
the order docbatch.domain.fairshare decides; the outbox (docbatch.domain.outbox) sends
their ids after the top-up's own commit. It runs after every commit that may have
changed a queue (a job created, a unit claimed, closed, split or given back, an
extraction settled: ``Outbox.add_dispatch``) and on every reconciler pass, so a queue
is refilled as soon as a worker takes from it and every queued unit reaches a worker
even if a top-up was lost. A unit marked running
whose lease no worker holds and that went unheartbeated for three heartbeats (the worker
died; a cut connection alone drops the lease of a live worker) goes back to the backlog
at the next top-up, its attempt counted.

A worker chaining units (claim-ahead) asks ``next_units`` instead of the broker. Units
sent and not claimed were picked in fair order already, so they and the backlog are
ordered together by job priority first: the next backlog unit in fair order goes next
unless a unit of the same tenant already sent is of a more urgent job (an urgent unit
sent early does not wait behind its tenant's routine backlog); then, or when the backlog
is empty, the units sent and not claimed, most urgent first (their messages then find
them running and are skipped, as for any duplicate). At one priority the backlog goes
first, so the messages already in the broker keep naming units for idle workers to
take, and the broker does not fill with messages of units a chain took. A backlog unit
picked overtaking (docbatch.domain.fairshare) runs before the unit the chain claimed
ahead (docbatch.worker.runner).

The broker so holds a few ids per queue whatever the size of the jobs, and Postgres
holds the backlog: autoscaling watches ``docbatch_queued_units`` (api/metrics.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import NamedTuple

from sqlalchemy import false, func, select, text, update
from sqlalchemy.orm import Session

from docbatch.domain import fairshare, leases
from docbatch.schema.db import transaction
from docbatch.schema.models import PRIORITY_MIN
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Job, Unit, UnitState, utcnow

log = logging.getLogger("docbatch.dispatch")


def sent_unclaimed(session: Session, queue: str) -> int:
    """Units of ``queue`` sent to the broker and not yet claimed."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Unit)
            .where(
                Unit.queue == queue,
                Unit.state == UnitState.queued.value,
                Unit.dispatched_at.is_not(None),
            )
        )
        or 0
    )


def silence(settings: Settings) -> dt.timedelta:
    """How long a running unit with no lease must also go unheartbeated before the
    top-up takes it back as lost: three missed heartbeats (a live worker whose
    connections were cut beats again once they are back), at most the lease period
    after which the reconciler sends it again anyway."""
    return dt.timedelta(
        seconds=min(3 * settings.unit_heartbeat_seconds, settings.running_lease_seconds)
    )


def top_up(session: Session, settings: Settings, queue: str) -> list[int]:
    """Pick ``queue``'s next units (up to the depth), marked sent; returns their ids for
    the caller to send after its commit."""
    fairshare.lock_queue(session, queue)
    lost = [u for u, _ in leases.orphaned(session, queue, utcnow() - silence(settings))]
    if lost:  # their workers died: back to the backlog, the attempt counted
        log.warning("units %s lost their worker; queued again", lost)
        session.execute(
            update(Unit)
            .where(Unit.id.in_(lost), Unit.state == UnitState.running.value)
            .values(state=UnitState.queued.value, dispatched_at=None)
        )
    want = settings.dispatch_depth - sent_unclaimed(session, queue)
    return fairshare.pick(session, queue, want, settings, utcnow())


def needing_top_up(session: Session, settings: Settings, queues: list[str]) -> list[str]:
    """Of ``queues``, those whose top-up could do something: fewer units sent and not
    claimed than DOCBATCH_DISPATCH_DEPTH, or a running unit silent long enough to be one
    a dead worker left (``top_up`` then looks at its lease). Any other ``top_up`` picks
    nothing and changes nothing. Asked inside the transaction that would top them up
    after its commit (``unit_of_work``), which saves a transaction per commit while the
    queue is full, as it is while a worker chains units: each commit that makes room
    (a claim, a unit given back) sees the room itself and tops up after it."""
    silent = utcnow() - silence(settings)
    postgres = session.get_bind().dialect.name == "postgresql"
    wanted = []
    for queue in queues:
        sent = (
            select(func.count())
            .select_from(Unit)
            .where(
                Unit.queue == queue,
                Unit.state == UnitState.queued.value,
                Unit.dispatched_at.is_not(None),
            )
            .scalar_subquery()
        )
        # No leases on SQLite: nothing is taken back there (leases.orphaned).
        orphans = (
            select(Unit.id)
            .where(
                Unit.queue == queue,
                Unit.state == UnitState.running.value,
                Unit.claimed_at < silent,
                Unit.heartbeat_at.is_(None) | (Unit.heartbeat_at < silent),
            )
            .exists()
            if postgres
            else false()
        )
        room, maybe_lost = session.execute(select(sent < settings.dispatch_depth, orphans)).one()
        if room or maybe_lost:
            wanted.append(queue)
    return wanted


# A loose index scan of ix_units_backlog: one probe per queue, where a DISTINCT read
# every backlog unit (a million-document job's thousands) on every reconciler pass.
_BACKLOGGED_QUEUES = text(
    """
WITH RECURSIVE backlogged(queue) AS (
    SELECT min(queue) FROM units WHERE state = 'queued' AND dispatched_at IS NULL
    UNION ALL
    SELECT (
        SELECT min(u.queue) FROM units u
        WHERE u.state = 'queued' AND u.dispatched_at IS NULL AND u.queue > b.queue
    ) FROM backlogged b WHERE b.queue IS NOT NULL
)
SELECT queue FROM backlogged WHERE queue IS NOT NULL
"""
)


def backlogged_queues(session: Session) -> list[str]:
    """Queues with units in the backlog."""
    return [str(q) for q in session.scalars(_BACKLOGGED_QUEUES)]


def _sent(session: Session, queue: str, candidates: int) -> list[tuple[int, str, int]]:
    """Up to ``candidates`` units of ``queue`` sent and not claimed, (id, tenant, job
    priority), the most urgent job first, then the oldest sent."""
    rows = session.execute(
        select(Unit.id, Job.tenant, Job.priority)
        .join(Job, Job.id == Unit.job_id)
        .where(
            Unit.queue == queue,
            Unit.state == UnitState.queued.value,
            Unit.dispatched_at.is_not(None),
        )
        .order_by(Job.priority.desc(), Unit.dispatched_at, Unit.id)
        .limit(candidates)
    ).all()
    return [(int(i), str(t), int(p or 0)) for i, t, p in rows]


class NextUnits(NamedTuple):
    """What ``next_units`` hands a chain."""

    ids: list[int]
    from_backlog: bool
    overtaking: bool = False  # the backlog unit was picked overtaking (fairshare.Picked)


def next_units(settings: Settings, queue: str, candidates: int) -> NextUnits:
    """What a worker chaining units should claim next, and whether it came from the
    backlog: the next backlog unit in fair order (marked sent, with no message: if the
    claim never happens, the reconciler sends it), unless a unit of the same tenant sent
    and not yet claimed is of a more urgent job; then (or when the backlog is empty) up
    to ``candidates`` of the units sent and not claimed, most urgent first."""
    with transaction(settings) as s:
        fairshare.lock_queue(s, queue)
        sent = _sent(s, queue, candidates)
        # Undone if a sent unit goes first; none can when none is above the lowest priority.
        urgent = any(p > PRIORITY_MIN for _, _, p in sent)
        choice = s.begin_nested() if urgent else None
        picked = fairshare.picks(s, queue, 1, settings, utcnow())
        if picked and choice is not None:
            first = picked[0]
            if any(t == first.tenant and p > first.priority for _, t, p in sent):
                picked = []
        if picked:
            if choice is not None:
                choice.commit()
            return NextUnits([picked[0].unit_id], True, picked[0].overtaking)
        if choice is not None:
            choice.rollback()
        return NextUnits([unit_id for unit_id, _, _ in sent], False)
