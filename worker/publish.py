"""Publishing unit ids to their task queues (after the database commit)."""

from __future__ import annotations

from collections.abc import Iterable

from worker.app import PROCESS_TASK, app, queue_for


def publish_units(units: Iterable[tuple[int, str]], priority: int = 0) -> int:
    """Send one message per unit on one broker connection; returns how many were sent."""
    sent = 0
    with app.producer_or_acquire() as producer:
        for unit_id, task in units:
            app.send_task(
                PROCESS_TASK,
                args=[unit_id],
                queue=queue_for(task),
                producer=producer,
                priority=priority,
            )
            sent += 1
    return sent
