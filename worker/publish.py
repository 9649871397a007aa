"""Publishing unit ids to their queues (after the database commit)."""

from __future__ import annotations

from collections.abc import Iterable

from worker.app import PROCESS_TASK, app


def publish_units(units: Iterable[tuple[int, str]], priority: int = 0) -> int:
    """Send one message per ``(unit id, queue)`` on one broker connection; returns the count."""
    sent = 0
    with app.producer_or_acquire() as producer:
        for unit_id, queue in units:
            app.send_task(
                PROCESS_TASK, args=[unit_id], queue=queue, producer=producer, priority=priority
            )
            sent += 1
    return sent
