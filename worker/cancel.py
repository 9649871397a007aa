"""Finishing a cancel off the request path: close a cancelling job's queued units in
batches.

``POST /v1/jobs/{id}/cancel`` only marks the job ``cancelling``; the cancel puts
``docbatch.cancel_job`` in the outbox for the maintenance queue, and this closes the
job's units not started yet (queued, or waiting for their files' extraction) as
cancelled, DOCBATCH_CANCEL_BATCH_DOCUMENTS documents' worth per transaction; the batch
that ends the job puts its webhook in the outbox. It runs on the maintenance queue (no
model, a few database statements per unit) rather than in the api (a 200,000-document
job took ~40 s there, holding the job lock) or behind each task's model queue (a job
whose task has no worker right now would never end). The reconciler sends it again for
any job still ``cancelling`` with units not started, so a lost message only delays the
cancel.

Two sweeps of one job at once (the reconciler's and the api's) are harmless but
wasteful; an advisory lock per job lets only one run. It is a session-level lock held
across the batches' transactions, so the sweep runs on a connection to
DOCBATCH_LEASE_DATABASE_URL (``get_lease_engine``), never through a transaction-mode pooler.
"""

from __future__ import annotations

import logging
import zlib

from sqlalchemy import Connection, text

from docbatch.domain import jobs
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import get_lease_engine, is_sqlite
from docbatch.schema.settings import Settings

log = logging.getLogger("docbatch.cancel")
NAMESPACE = 0x6463  # first key of the two-int advisory lock: "dc" (leases use "db")


def _job_key(job_id: str) -> int:
    return zlib.crc32(job_id.encode()) & 0x7FFFFFFF


def sweep(job_id: str, settings: Settings) -> int:
    """Close every not-started unit of a cancelling job, a batch per transaction; returns
    how many units this call closed (0 when another sweep of the job is running)."""
    if is_sqlite(settings):
        return _sweep(job_id, settings, None)
    with get_lease_engine(settings).connect() as conn:
        args = {"ns": NAMESPACE, "key": _job_key(job_id)}
        got = conn.execute(text("SELECT pg_try_advisory_lock(:ns, :key)"), args).scalar()
        conn.commit()
        if not got:
            return 0
        try:
            return _sweep(job_id, settings, conn)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:ns, :key)"), args)
            conn.commit()


def _sweep(job_id: str, settings: Settings, conn: Connection | None) -> int:
    closed, batches, more = 0, 0, True
    while more:
        with unit_of_work(settings, bind=conn) as s:
            n, more = jobs.cancel_queued_batch(s, job_id, settings.cancel_batch_documents)
        closed += n
        batches += 1
    if closed:
        log.info("%s: cancelled %d queued units in %d batches", job_id, closed, batches)
    return closed
