"""Sending messages to the broker: unit ids, cancel sweeps, webhook deliveries.

Only the outbox (docbatch.domain.outbox) calls the senders, after the transaction that
made the rows commits; ``queue_depths`` is what the reconciler asks the broker.
"""

from __future__ import annotations

from collections.abc import Iterable

from docbatch.domain.broker import (
    CANCEL_TASK,
    DELETE_TASK,
    PROCESS_TASK,
    WEBHOOK_TASK,
    app_for,
    broker_priority,
)
from docbatch.schema.settings import Settings


def publish_prioritized(units: Iterable[tuple[int, str, int]], settings: Settings) -> int:
    """Send one message per ``(unit id, queue, job priority)`` on one broker connection;
    returns the count."""
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


def publish_cancels(job_ids: Iterable[str], settings: Settings) -> int:
    """Queue the batched close of cancelled jobs' not-started units (docbatch.worker.cancel)
    on the maintenance queue; returns the count."""
    app = app_for(settings)
    sent = 0
    with app.producer_or_acquire() as producer:
        for job_id in job_ids:
            app.send_task(
                CANCEL_TASK, args=[job_id], queue=settings.maintenance_queue, producer=producer
            )
            sent += 1
    return sent


def publish_deletes(job_ids: Iterable[str], settings: Settings) -> int:
    """Queue the batched delete of jobs' rows (docbatch.worker.deletion) on the
    maintenance queue; returns the count."""
    app = app_for(settings)
    sent = 0
    with app.producer_or_acquire() as producer:
        for job_id in job_ids:
            app.send_task(
                DELETE_TASK, args=[job_id], queue=settings.maintenance_queue, producer=producer
            )
            sent += 1
    return sent


def publish_webhooks(delivery_ids: Iterable[int], settings: Settings) -> int:
    """Queue webhook deliveries for `docbatch webhooks` (never a model worker); returns
    the count."""
    app = app_for(settings)
    sent = 0
    with app.producer_or_acquire() as producer:
        for delivery_id in delivery_ids:
            app.send_task(
                WEBHOOK_TASK, args=[delivery_id], queue=settings.webhook_queue, producer=producer
            )
            sent += 1
    return sent


def queue_depths(queues: list[str], settings: Settings) -> dict[str, int | None]:
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
