"""The reconciler: the beat sends ``docbatch.reconcile`` to the maintenance queue every
DOCBATCH_RECONCILE_INTERVAL_SECONDS and any worker runs this. What counts as lost (units,
cancel sweeps, webhook deliveries) is the ledger's rule (docbatch.domain.reconcile); this
only opens the unit of work whose outbox sends it all again after the commit.
"""

from __future__ import annotations

import functools
import time

from docbatch.domain.outbox import unit_of_work
from docbatch.domain.publish import queue_depths
from docbatch.domain.reconcile import find_lost
from docbatch.schema.settings import Settings
from docbatch.worker import metrics


def reconcile_once(settings: Settings) -> int:
    """One pass; returns how many messages it sends."""
    start = time.perf_counter()
    with unit_of_work(settings) as s:
        found = find_lost(s, settings, functools.partial(queue_depths, settings=settings))
    metrics.reconciled(found.units, found.cancels, found.webhooks, time.perf_counter() - start)
    return found.total
