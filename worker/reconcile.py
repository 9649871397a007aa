"""The reconciler (beat, every DOCBATCH_RECONCILE_INTERVAL_SECONDS on the maintenance
queue): puts back work whose broker message was lost. Postgres is the truth; the broker
only carries unit ids, so anything the broker forgets is found here.

- A **running** unit whose heartbeat is older than DOCBATCH_RUNNING_LEASE_SECONDS lost its
  worker (SIGKILL, OOM, host gone): republished; the next claim counts an attempt, and
  DOCBATCH_MAX_UNIT_ATTEMPTS caps a unit that keeps killing its workers.
- A **queued** unit published more than DOCBATCH_REQUEUE_AFTER_SECONDS ago may just be
  waiting behind a long queue, or its message may be gone (Redis restarted without
  persistence, flushed, a publish that failed after commit). The reconciler compares each
  queue's depth in the broker with the number of queued units that name it and
  republishes only the shortfall (oldest first), so a deep backlog is not duplicated
  every pass. Duplicates that still happen are harmless: a closed unit is skipped.
- A job still **cancelling** with queued units gets its batched cancel (docbatch.worker.cancel)
  sent again, in case the api's message was lost.
- A webhook delivery still undelivered past its retry time is sent again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from sqlalchemy import func, select

from docbatch.domain import jobs, ledger, webhooks
from docbatch.domain.publish import (
    publish_cancels,
    publish_prioritized,
    publish_webhooks,
    queue_depths,
)
from docbatch.schema.db import transaction
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Job, JobStatus, Unit, UnitState, utcnow

log = logging.getLogger("docbatch.reconcile")


def reconcile_once() -> int:
    """One sweep; returns how many messages it sent."""
    settings = get_settings()
    now = utcnow()
    with transaction() as s:
        stale = ledger.stale_units(
            s,
            queued_before=now - dt.timedelta(seconds=settings.requeue_after_seconds),
            running_before=now - dt.timedelta(seconds=settings.running_lease_seconds),
        )
        states = dict(
            s.execute(select(Unit.id, Unit.state).where(Unit.id.in_([u for u, _ in stale]))).all()
        )
        waiting: dict[str, list[int]] = defaultdict(list)
        resend: list[tuple[int, str]] = []
        for unit_id, queue in stale:
            if states.get(unit_id) == UnitState.queued.value:
                waiting[queue].append(unit_id)
            else:
                resend.append((unit_id, queue))
        if waiting:
            queued = dict(
                s.execute(
                    select(Unit.queue, func.count())
                    .where(Unit.state == UnitState.queued.value, Unit.queue.in_(list(waiting)))
                    .group_by(Unit.queue)
                ).all()
            )
            depths = queue_depths(list(waiting))
            for queue, unit_ids in waiting.items():
                depth = depths.get(queue)
                missing = len(unit_ids) if depth is None else queued.get(queue, 0) - depth
                resend.extend((u, queue) for u in unit_ids[: max(missing, 0)])
        jobs.touch_published(s, [unit_id for unit_id, _ in resend])
        # A republished message keeps its job's priority, or it jumps the queue.
        priority = dict(
            s.execute(
                select(Unit.id, Job.priority)
                .join(Job, Job.id == Unit.job_id)
                .where(Unit.id.in_([unit_id for unit_id, _ in resend]))
            ).all()
        )
        cancelling = list(
            s.scalars(
                select(Job.id)
                .where(
                    Job.status == JobStatus.cancelling.value,
                    select(Unit.id)
                    .where(Unit.job_id == Job.id, Unit.state == UnitState.queued.value)
                    .exists(),
                )
                .limit(1000)
            )
        )
        late = webhooks.due(
            s,
            before=now - dt.timedelta(seconds=settings.requeue_after_seconds),
            max_attempts=settings.webhook_max_attempts,
        )
    if resend:
        log.warning("republishing %d units whose messages were lost", len(resend))
        publish_prioritized((u, queue, priority.get(u, 0)) for u, queue in resend)
    if cancelling:
        publish_cancels(cancelling)
    if late:
        log.warning("resending %d webhook deliveries", len(late))
        publish_webhooks(late)
    return len(resend) + len(cancelling) + len(late)
