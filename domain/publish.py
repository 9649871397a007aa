"""Publishing unit ids to their queues (after the database commit)."""

from __future__ import annotations

from collections.abc import Iterable

from docbatch.domain.broker import CANCEL_TASK, PROCESS_TASK, WEBHOOK_TASK, app_for, broker_priority
from docbatch.schema.settings import Settings, get_settings


def publish_units(
    units: Iterable[tuple[int, str]], priority: int = 0, settings: Settings | None = None
) -> int:
    """Send one message per ``(unit id, queue)`` of a job of ``priority`` (0-9, 9 = most
    urgent) on one broker connection; returns the count."""
    return publish_prioritized(((unit_id, queue, priority) for unit_id, queue in units), settings)


def publish_prioritized(
    units: Iterable[tuple[int, str, int]], settings: Settings | None = None
) -> int:
    """Send one message per ``(unit id, queue, job priority)``; returns the count."""
    app = app_for(settings)
    sent = 0
    with app.producer_or_acquire() as producer:
        for unit_id, queue, priority in units:
            app.send_task(
                PROCESS_TASK,
                args=[unit_id],
                queue=queue,
                producer=producer,
                priority=broker_priority(priority),
            )
            sent += 1
    return sent


def republish(unit_ids: Iterable[int], settings: Settings | None = None) -> int:
    """New messages for units queued again in Postgres (split off, given back), each at
    its job's priority, so a unit never loses its place to less urgent work."""
    from sqlalchemy import select

    from docbatch.schema.db import new_session
    from docbatch.schema.tables import Job, Unit

    ids = list(unit_ids)
    if not ids:
        return 0
    with new_session(settings) as s:
        rows = s.execute(
            select(Unit.id, Unit.queue, Job.priority)
            .join(Job, Job.id == Unit.job_id)
            .where(Unit.id.in_(ids))
        ).all()
    return publish_prioritized(((r.id, r.queue, r.priority) for r in rows), settings)


def publish_cancels(job_ids: Iterable[str], settings: Settings | None = None) -> int:
    """Queue the batched close of cancelled jobs' queued units (docbatch.worker.cancel) on the
    maintenance queue; returns the count."""
    queue = (settings or get_settings()).maintenance_queue
    app = app_for(settings)
    sent = 0
    with app.producer_or_acquire() as producer:
        for job_id in job_ids:
            app.send_task(CANCEL_TASK, args=[job_id], queue=queue, producer=producer)
            sent += 1
    return sent


def publish_webhooks(delivery_ids: Iterable[int], settings: Settings | None = None) -> int:
    """Queue webhook deliveries for `docbatch webhooks` (never a model worker); returns
    the count."""
    queue = (settings or get_settings()).webhook_queue
    app = app_for(settings)
    sent = 0
    with app.producer_or_acquire() as producer:
        for delivery_id in delivery_ids:
            app.send_task(WEBHOOK_TASK, args=[delivery_id], queue=queue, producer=producer)
            sent += 1
    return sent


def queue_depths(queues: list[str], settings: Settings | None = None) -> dict[str, int | None]:
    """Messages waiting in each queue (all priorities); None where the broker can't say."""
    app = app_for(settings)
    depths: dict[str, int | None] = {}
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for queue in queues:
            try:
                depths[queue] = int(channel.queue_declare(queue=queue).message_count)
            except Exception:  # unknown depth: republish as before
                depths[queue] = None
    return depths
