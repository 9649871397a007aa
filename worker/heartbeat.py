"""A running unit's heartbeat: a thread touching ``units.heartbeat_at`` while it runs.

The reconciler republishes a running unit whose heartbeat is older than
DOCBATCH_RUNNING_LEASE_SECONDS, so a SIGKILLed/OOM-killed worker's unit is picked up in
about a lease, not after the broker's visibility timeout (hours). A live worker keeps
its unit's heartbeat fresh however long the unit takes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import update

from schema.db import transaction
from schema.tables import Unit, UnitState, utcnow

log = logging.getLogger("docbatch.worker")


def touch(unit_id: int) -> None:
    with transaction() as s:
        s.execute(
            update(Unit)
            .where(Unit.id == unit_id, Unit.state == UnitState.running.value)
            .values(heartbeat_at=utcnow())
        )


@contextmanager
def heartbeat(unit_id: int, every: float) -> Iterator[None]:
    """Touch the unit's heartbeat every ``every`` seconds until the block ends."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                touch(unit_id)
            except Exception as exc:  # noqa: BLE001 - a database blip: try again next beat
                log.warning("heartbeat of unit %d failed: %s", unit_id, exc)

    thread = threading.Thread(target=beat, name=f"heartbeat-{unit_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every + 5)
