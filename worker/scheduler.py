"""The schedule tick: fire every schedule whose period has begun, exactly once.

Beat sends ``docbatch.schedule_tick`` to the maintenance queue every
DOCBATCH_SCHEDULE_TICK_SECONDS; any worker runs it. Several beats (a mistake, or a
failover) only mean more ticks: ``docbatch.domain.schedules.fire`` lets one transaction per
(schedule, period) create the job.
"""

from __future__ import annotations

import datetime as dt
import logging

from docbatch.domain import schedules
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import transaction
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Schedule, utcnow
from docbatch.worker.runner import worker_name

log = logging.getLogger("docbatch.scheduler")


def tick(settings: Settings, now: dt.datetime | None = None) -> list[schedules.Firing]:
    """Fire the due schedules; returns the firings this call won (job or recorded error).
    A job's units are published when its transaction commits (its outbox)."""
    now = now or utcnow()
    with transaction(settings) as s:
        due = schedules.due_schedules(s, now)
    fired = []
    for schedule_id, period in due:
        # One transaction per schedule: a slow folder does not hold the others' claims, and
        # whatever goes wrong with one schedule (its claim rolls back, the next tick tries
        # it again) never stops the schedules after it from firing.
        try:
            with unit_of_work(settings) as s:
                schedule = s.get(Schedule, schedule_id)
                if schedule is None or not schedule.enabled:
                    continue
                firing = schedules.fire(s, settings, schedule, period, worker_name())
        except Exception:  # isolate schedules from each other
            log.exception("schedule %s period %s could not fire", schedule_id, period)
            continue
        if firing is None:
            continue
        fired.append(firing)
        if firing.job is None:
            log.warning("schedule %s period %s: %s", schedule_id, period, firing.error)
            continue
        log.info(
            "schedule %s fired for %s: job %s", schedule_id, period.isoformat(), firing.job.job.id
        )
    return fired
