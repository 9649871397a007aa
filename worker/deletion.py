"""Running a job's delete off the request path (docbatch.domain.deletion has the rules).

``DELETE /v1/jobs/{id}`` puts ``docbatch.delete_job`` in its outbox for the maintenance
queue (or the unit that ends a cancelled job does); this deletes the job's rows a batch
per transaction. Two deletes of one job at once (the api's and the lifecycle pass's)
would only wait on each other's job lock; an advisory lock per job lets one run. A
worker killed half-way leaves the job ``deleting``: the beat's lifecycle pass
(docbatch.worker.lifecycle) runs this again for it. The per-job lock is session-level,
held across the batches: the delete runs on a connection to DOCBATCH_LEASE_DATABASE_URL
(``get_lease_engine``), never through a transaction-mode pooler.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Callable, Iterator

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from docbatch.domain import deletion
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import get_lease_engine, is_sqlite
from docbatch.schema.settings import Settings

log = logging.getLogger("docbatch.deletion")
NAMESPACE = 0x6464  # first key of the two-int advisory lock: "dd"


def _job_key(job_id: str) -> int:
    return zlib.crc32(job_id.encode()) & 0x7FFFFFFF


def delete_job(
    job_id: str, settings: Settings, on_batch: Callable[[deletion.Batch], None] | None = None
) -> int:
    """Delete the job's rows, a batch per transaction; returns the rows deleted (0 when
    another delete of the job runs, or the job is not ready to delete)."""
    if is_sqlite(settings):
        return _delete(job_id, settings, None, on_batch)
    with get_lease_engine(settings).connect() as conn:
        args = {"ns": NAMESPACE, "key": _job_key(job_id)}
        got = conn.execute(text("SELECT pg_try_advisory_lock(:ns, :key)"), args).scalar()
        conn.commit()
        if not got:
            return 0
        try:
            return _delete(job_id, settings, conn, on_batch)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:ns, :key)"), args)
            conn.commit()


def _delete(
    job_id: str,
    settings: Settings,
    conn: Connection | None,
    on_batch: Callable[[deletion.Batch], None] | None,
) -> int:
    @contextlib.contextmanager
    def transaction() -> Iterator[Session]:
        with unit_of_work(settings, bind=conn) as s:
            yield s

    rows, blobs, gone = deletion.run_delete(job_id, settings, transaction, on_batch)
    if gone:
        log.info("%s: deleted %d rows and %d blobs", job_id, rows, blobs)
    return rows
