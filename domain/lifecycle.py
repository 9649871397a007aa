"""The lifecycle pass: what keeps stored data owned and bounded.

Run every DOCBATCH_LIFECYCLE_INTERVAL_SECONDS by the beat (docbatch.worker.lifecycle) and
on demand by ``docbatch gc``. One pass:

- **interrupted deletes**: a job still marked ``deleting`` that has ended (its delete's
  worker died half-way, or the message was lost) has its delete run again;
- **retention**: a finished job older than its retention (the job's ``retention_days``,
  capped by its tenant's, else the tenant's, else DOCBATCH_RETENTION_DAYS; 0 keeps
  forever) is marked deleting and its delete sent; a ``job.deleted`` webhook follows
  when its rows are gone;
- **expired OpenAI files**: a ``/v1/files`` file past its ``expires_at`` (``expires_after``
  on upload, a batch's ``output_expires_after``) is deleted with its bytes, unless a
  running batch still uses it (then at the next pass after it ends);
- **orphaned blobs**: a large object (on SQLite, a ``blobs`` row) that no row names;
  every path that stores or drops one does it in the transaction that adds or removes
  the row naming it, so this finds only what something outside docbatch's code left
  (a restore of part of a backup, a manual ``DELETE``). The check reads the blobs and
  the rows that name them in one snapshot: a blob being written now is not visible yet,
  and so not taken for an orphan;
- **orphaned originals**: an ``originals`` row (a tenant's shared file bytes) that no
  ``document_files`` row names any more, with its blob; and counts that drifted from the
  rows are set right.

A blob store shared with something else than docbatch is not supported: the database's
large objects are all docbatch's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import delete, func, select, text, union, update
from sqlalchemy.orm import Session

from docbatch.domain import blobs, deletion, tenants
from docbatch.domain.outbox import outbox
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Blob, DocumentFile, Job, Original, StoredFile, utcnow

ORPHAN_BATCH = 1000


@dataclass
class Report:
    """What one pass found and did."""

    deletes_resumed: list[str] = field(default_factory=list)
    expired_jobs: list[str] = field(default_factory=list)
    expired_files: list[str] = field(default_factory=list)
    rows_deleted: int = 0
    orphaned_blobs: int = 0
    orphaned_originals: int = 0
    originals_recounted: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def anything(self) -> bool:
        return any(self.as_dict().values())


def resume_deletes(session: Session, report: Report) -> list[str]:
    """The ended jobs still marked deleting (their deletes to run again)."""
    found = deletion.deleting_jobs(session)
    report.deletes_resumed.extend(found)
    return found


def expired_jobs(
    session: Session, settings: Settings, now: dt.datetime, limit: int = 1000
) -> list[str]:
    """Finished jobs past their retention, not being deleted yet (oldest first)."""
    policies: dict[str, int] = {}
    for tenant in session.scalars(select(Job.tenant).distinct()):
        policies[tenant] = tenants.storage_policy(session, tenant, settings).retention_days
    live = (Job.deleting_at.is_(None), Job.finished_at.is_not(None))
    found: list[str] = []
    # The tenant's retention, for jobs without their own (or with a longer one).
    for tenant, days in policies.items():
        if days <= 0:
            continue
        cutoff = now - dt.timedelta(days=days)
        found += session.scalars(
            select(Job.id)
            .where(*live, Job.tenant == tenant, Job.finished_at < cutoff)
            .order_by(Job.finished_at)
            .limit(limit)
        )
    # A job's own, shorter retention.
    own = session.scalars(
        select(Job.retention_days).where(*live, Job.retention_days.is_not(None)).distinct()
    )
    for job_days in own:
        cutoff = now - dt.timedelta(days=int(job_days or 0))
        found += session.scalars(
            select(Job.id)
            .where(*live, Job.retention_days == job_days, Job.finished_at < cutoff)
            .order_by(Job.finished_at)
            .limit(limit)
        )
    return list(dict.fromkeys(found))[:limit]


def expire_jobs(session: Session, settings: Settings, report: Report) -> list[str]:
    """Mark the jobs past retention deleting; returns them (their deletes to send)."""
    now = utcnow()
    found = expired_jobs(session, settings, now)
    if found:
        session.execute(
            update(Job)
            .where(Job.id.in_(found), Job.deleting_at.is_(None))
            .values(deleting_at=now, delete_reason="retention")
        )
    report.expired_jobs.extend(found)
    return found


def expire_files(session: Session, report: Report, limit: int = ORPHAN_BATCH) -> None:
    """Delete the OpenAI files past their ``expires_at`` (not one a running batch uses)."""
    from docbatch.domain.openai.files import in_use_by

    found = session.scalars(
        select(StoredFile)
        .where(StoredFile.expires_at.is_not(None), StoredFile.expires_at < utcnow())
        .order_by(StoredFile.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    gone = [f for f in found if in_use_by(session, f.id) is None]
    blobs.delete_many(session, [int(f.blob_oid) for f in gone if f.blob_oid is not None])
    for f in gone:
        session.delete(f)
        report.expired_files.append(f.id)


def send_deletes(session: Session, job_ids: list[str]) -> None:
    for job_id in job_ids:
        outbox(session).add_delete(job_id)


def _referenced() -> str:
    return (
        "SELECT blob_oid FROM document_files WHERE blob_oid IS NOT NULL "
        "UNION SELECT blob_oid FROM originals "
        "UNION SELECT blob_oid FROM files WHERE blob_oid IS NOT NULL"
    )


def orphaned_blobs(session: Session, limit: int = ORPHAN_BATCH) -> list[int]:
    """Blobs no row names (one statement: one snapshot of blobs and rows)."""
    if session.get_bind().dialect.name == "sqlite":
        named: Any = union(
            select(DocumentFile.blob_oid).where(DocumentFile.blob_oid.is_not(None)),
            select(Original.blob_oid),
            select(StoredFile.blob_oid).where(StoredFile.blob_oid.is_not(None)),
        )
        return [
            int(o)
            for o in session.scalars(select(Blob.oid).where(Blob.oid.not_in(named)).limit(limit))
        ]
    rows = session.execute(
        text(
            "SELECT m.oid FROM pg_largeobject_metadata m "
            f"WHERE m.oid::bigint NOT IN ({_referenced()}) ORDER BY m.oid LIMIT :n"
        ),
        {"n": limit},
    ).scalars()
    return [int(o) for o in rows]


def remove_orphaned_blobs(session: Session, report: Report) -> None:
    oids = orphaned_blobs(session)
    blobs.delete_many(session, oids)
    report.orphaned_blobs += len(oids)


def fix_originals(session: Session, report: Report) -> None:
    """Originals no file row names go (with their blob); drifted counts are set right."""
    uses = (
        select(func.count())
        .select_from(DocumentFile)
        .where(DocumentFile.blob_oid == Original.blob_oid)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Original.id, Original.blob_oid, Original.refs, uses.label("uses"))
        .where(Original.refs != uses)
        .limit(ORPHAN_BATCH)
        .with_for_update(of=Original)
    ).all()
    gone = [r for r in rows if r.uses == 0]
    for r in rows:
        if r.uses:
            session.execute(update(Original).where(Original.id == r.id).values(refs=r.uses))
            report.originals_recounted += 1
    if gone:
        session.execute(delete(Original).where(Original.id.in_([r.id for r in gone])))
        blobs.delete_many(session, [int(r.blob_oid) for r in gone])
        report.orphaned_originals += len(gone)
