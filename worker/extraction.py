"""The extract stage's worker: a unit's files become text, in a sandbox child. No model.

``run_extract_unit`` claims an ``extract`` unit (under a lease on Postgres, with a
heartbeat), reads each document's original bytes from its blob, extracts them in the
process's ``Sandbox`` (a child process with a time limit per file: a parser that
hangs or crashes costs that file, never the worker), follows attachments and archive
members (within DOCBATCH_EXTRACT_ARCHIVE_MAX_FILES and DOCBATCH_EXTRACT_MAX_DEPTH),
and hands the outcomes to ``docbatch.domain.extraction.record``, which writes them and the
unit's close in one transaction; the model units that waited on these files are
published after it commits. An earlier extraction of the same bytes by the same
extractor versions is copied instead of run again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from docbatch.domain import ledger
from docbatch.domain.extraction import Extraction, Extractor, earlier, files_of, record
from docbatch.schema.db import is_sqlite, transaction
from docbatch.schema.settings import Settings
from docbatch.schema.tables import EXTRACT, Unit, UnitState
from docbatch.worker.extract.expand import extractor_for
from docbatch.worker.extract.unit import extract_files
from docbatch.worker.heartbeat import heartbeat
from docbatch.worker.runner import Outcome, cancel_watcher, worker_name

log = logging.getLogger("docbatch.worker")


@contextlib.contextmanager
def _held(unit_id: int, settings: Settings) -> Iterator[bool]:
    """The unit's lease and heartbeat while this block runs; False: another live worker
    holds it. SQLite has no leases: a heartbeat only."""
    if is_sqlite(settings):
        with heartbeat(unit_id, settings.unit_heartbeat_seconds):
            yield True
        return
    from docbatch.worker.pipeline import drop_lease, get_lease

    try:
        lease = get_lease(settings)
        got = lease.acquire(unit_id)
    except Exception:
        drop_lease()
        raise
    try:
        yield got
    finally:
        if got:
            with contextlib.suppress(Exception):
                lease.release(unit_id)


def run_extract_unit(unit_id: int, settings: Settings) -> Outcome:
    """Extract one unit's files and write them; returns what happened."""
    with _held(unit_id, settings) as ours:
        if not ours:
            return Outcome.skipped
        return _run(unit_id, settings)


def _run(unit_id: int, settings: Settings) -> Outcome:
    extractor = extractor_for(settings)
    with transaction(settings) as s:
        claim = ledger.claim_unit(s, unit_id, worker_name(), settings.max_unit_attempts)
        if claim is None:
            return Outcome.skipped
        job_id, tenant = claim.job.id, claim.job.tenant
        if claim.unit.task != EXTRACT:
            ledger.close_unit(
                s,
                claim.unit,
                UnitState.failed,
                reason=f"unit for task {claim.unit.task!r} reached an 'extract' worker",
            )
            ledger.finalize_job_if_done(s, claim.job)
            return Outcome.misrouted
        documents = [(d[0], d[1]) for d in claim.documents]
        files = files_of(s, [d[0] for d in documents])
        reused = earlier(s, tenant, job_id, files, extractor)
        split_off = claim.split_off
    if split_off:
        from docbatch.domain.publish import republish

        with contextlib.suppress(Exception):  # queued in Postgres: the reconciler sends them
            republish([u for u, _ in split_off], settings)
    # The compute step: texts and members spooled on disk until the write streams them.
    with extract_files(documents, files, reused, settings, cancel_watcher(job_id)) as found:
        return _write(unit_id, job_id, found.outcomes, extractor, settings, found.cancelled)


def _write(
    unit_id: int,
    job_id: str,
    outcomes: dict[int, Extraction],
    extractor: Extractor,
    settings: Settings,
    cancelled: bool,
) -> Outcome:
    from docbatch.schema.tables import JobStatus

    with transaction(settings) as s:
        job = ledger.lock_job(s, job_id)
        unit = s.get(Unit, unit_id)
        if unit is None or unit.state != UnitState.running.value:
            return Outcome.superseded
        if cancelled or job.status in (JobStatus.cancelling.value, JobStatus.cancelled.value):
            ledger.close_unit(s, unit, UnitState.cancelled, reason="job cancelled")
            outcome = Outcome.cancelled
        else:
            record(s, settings, unit, job, outcomes, extractor)
            outcome = Outcome.done
        ledger.finalize_job_if_done(s, job)
        released = s.info.pop("released_units", [])
    if released:
        from docbatch.domain.publish import republish

        try:
            republish([u for u, _ in released], settings)
        except Exception:  # queued in Postgres: the reconciler publishes them
            log.exception("could not publish units %s", released)
    return outcome
