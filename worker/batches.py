"""The beat's batch tick (``docbatch.batch_tick``, every DOCBATCH_BATCH_TICK_SECONDS): OpenAI
batches are moved along here, never by a read. A batch whose job ended is finalized (its
output and error files written once, under the batch's row lock); one past its completion
window is expired (its job cancelled; the next tick finalizes it). Each batch is its own
transaction, so one big finalization holds up no other batch."""

from __future__ import annotations

import logging

from docbatch.domain.openai import batches
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import new_session
from docbatch.schema.settings import Settings

log = logging.getLogger("docbatch.batches")


def tick(settings: Settings) -> int:
    """One pass; returns how many batches it moved."""
    with new_session(settings) as s:
        due = batches.due(s)
    moved = 0
    for batch_id in due:
        # The job's cancel sweep (expiry) is published once the transaction commits.
        with unit_of_work(settings) as s:
            did = batches.advance(s, settings, batch_id)
        if did is not None:
            log.info("batch %s %s", batch_id, did)
            moved += 1
    return moved
