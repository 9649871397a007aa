"""Finding work whose message was lost: the ledger's repair, run by the beat's reconciler.

Postgres is the truth and the broker carries only ids, so whatever the broker forgets is
found here and put in the transaction's outbox (docbatch.worker.reconcile runs it every
DOCBATCH_RECONCILE_INTERVAL_SECONDS and the outbox publishes):

- A **running** unit whose heartbeat is older than DOCBATCH_RUNNING_LEASE_SECONDS lost its
  worker (SIGKILL, OOM, host gone): sent again; the next claim counts an attempt, and the
  retry policy (docbatch.domain.retry) caps a unit that keeps killing its workers.
- A **queued** unit sent to the broker more than DOCBATCH_REQUEUE_AFTER_SECONDS ago may
  just be waiting behind a long queue, or its message may be gone (Redis restarted without
  persistence, flushed, a publish that failed after commit). Each queue's depth in the
  broker is compared with the number of queued units that name it and only the shortfall
  is sent again (oldest first), so a deep backlog is not duplicated every pass.
  Duplicates that still happen are harmless: a closed unit is skipped.
- A **running** unit whose lease no worker holds and that went unheartbeated for three
  heartbeats (its worker died; a connection cut alone drops a live worker's lease) has
  its queue topped up, which takes it back (docbatch.domain.dispatch.top_up), well
  before its lease period.
- A queue with units in the **backlog** (queued, never sent: docbatch.domain.dispatch) is
  topped up, in case the top-up after the commit that made them was lost.
- A job still **cancelling** with units not started (queued, or waiting for their files'
  extraction) gets its batched cancel (docbatch.worker.cancel) sent again, in case the
  first message was lost.
- A webhook delivery still undelivered past its retry time is sent again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from docbatch.domain import dispatch, leases, webhooks
from docbatch.domain.outbox import outbox
from docbatch.schema.settings import Settings
from docbatch.schema.tables import NOT_STARTED_UNIT_STATES, Job, JobStatus, Unit, UnitState, utcnow

log = logging.getLogger("docbatch.reconcile")
QueueDepths = Callable[[list[str]], dict[str, int | None]]


@dataclass
class Found:
    """What one pass put in the outbox."""

    units: int = 0
    cancels: int = 0
    webhooks: int = 0

    @property
    def total(self) -> int:
        return self.units + self.cancels + self.webhooks


def stale_units(
    session: Session, queued_before: dt.datetime, running_before: dt.datetime, limit: int = 5000
) -> list[tuple[int, str, str]]:
    """(id, queue, state) of units whose message may be lost: queued and not picked up, or
    running with no heartbeat since ``running_before`` (its worker died).

    Two reads, each on its own small index (the units sent and not claimed, the running
    ones): one read with OR, in id order, walked every unit of every job."""
    sent = session.execute(
        select(Unit.id, Unit.queue, Unit.state)
        .where(
            Unit.state == UnitState.queued.value,
            Unit.dispatched_at.is_not(None),
            Unit.dispatched_at < queued_before,
        )
        .order_by(Unit.dispatched_at)
        .limit(limit)
    ).all()
    running = session.execute(
        select(Unit.id, Unit.queue, Unit.state)
        .where(
            Unit.state == UnitState.running.value,
            Unit.claimed_at < running_before,
            Unit.heartbeat_at.is_(None) | (Unit.heartbeat_at < running_before),
            Unit.published_at < running_before,
        )
        .limit(limit)
    ).all()
    rows = sorted([*sent, *running], key=lambda r: int(r.id))[:limit]
    return [(int(r.id), r.queue, r.state) for r in rows]


def _shortfall(
    session: Session, waiting: dict[str, list[int]], depths: QueueDepths
) -> list[tuple[int, str]]:
    """The queued units to send again: per queue, as many as the broker is short of."""
    if not waiting:
        return []
    queued = dict(
        session.execute(
            select(Unit.queue, func.count())
            .where(
                Unit.state == UnitState.queued.value,
                Unit.dispatched_at.is_not(None),
                Unit.queue.in_(list(waiting)),
            )
            .group_by(Unit.queue)
        ).all()
    )
    in_broker = depths(list(waiting))
    resend: list[tuple[int, str]] = []
    for queue, unit_ids in waiting.items():
        depth = in_broker.get(queue)
        missing = len(unit_ids) if depth is None else queued.get(queue, 0) - depth
        resend.extend((u, queue) for u in unit_ids[: max(missing, 0)])
    return resend


def find_lost(session: Session, settings: Settings, depths: QueueDepths) -> Found:
    """One pass: everything whose message may be lost goes into the session's outbox."""
    now = utcnow()
    stale = stale_units(
        session,
        queued_before=now - dt.timedelta(seconds=settings.requeue_after_seconds),
        running_before=now - dt.timedelta(seconds=settings.running_lease_seconds),
    )
    waiting: dict[str, list[int]] = defaultdict(list)
    resend: list[tuple[int, str]] = []
    for unit_id, queue, state in stale:
        if state == UnitState.queued.value:
            waiting[queue].append(unit_id)
        else:
            resend.append((unit_id, queue))
    resend += _shortfall(session, waiting, depths)
    box = outbox(session)
    if resend:
        ids = [unit_id for unit_id, _ in resend]
        session.execute(
            update(Unit).where(Unit.id.in_(ids)).values(published_at=now, dispatched_at=now)
        )
        # A message sent again keeps its job's priority, or it jumps the queue.
        priority = dict(
            session.execute(
                select(Unit.id, Job.priority)
                .join(Job, Job.id == Unit.job_id)
                .where(Unit.id.in_(ids))
            ).all()
        )
        log.warning("sending %d units again whose messages were lost", len(resend))
        for unit_id, queue in resend:
            box.add_unit(unit_id, queue, priority.get(unit_id, 0))
    for queue in dispatch.backlogged_queues(session):
        box.add_dispatch(queue)
    # Units whose worker died (no lease, silent past dispatch.silence): the top-up of
    # their queue takes them back, whether or not anything else commits on it.
    for queue in {q for _, q in leases.orphaned(session, None, now - dispatch.silence(settings))}:
        box.add_dispatch(queue)
    cancelling = session.scalars(
        select(Job.id)
        .where(
            Job.status == JobStatus.cancelling.value,
            select(Unit.id)
            .where(Unit.job_id == Job.id, Unit.state.in_(NOT_STARTED_UNIT_STATES))
            .exists(),
        )
        .limit(1000)
    ).all()
    for job_id in cancelling:
        box.add_cancel(job_id)
    late = webhooks.due(
        session,
        before=now - dt.timedelta(seconds=settings.requeue_after_seconds),
        max_attempts=settings.webhook_max_attempts,
    )
    if late:
        log.warning("sending %d webhook deliveries again", len(late))
        box.add_webhooks(late)
    return Found(len(resend), len(cancelling), len(late))
