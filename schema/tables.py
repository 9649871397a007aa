"""The tables. Postgres in deployment, SQLite for the embedded ``docbatch run``.

Counters live on ``job_tasks`` and move only when a unit changes state, inside the
same transaction, so for every job and task::

    succeeded + failed + cancelled == total   (once the job is terminal)
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Re-exported: the statuses live where a client install (no SQLAlchemy) can import them.
from docbatch.schema.statuses import TERMINAL_JOB_STATUSES as TERMINAL_JOB_STATUSES
from docbatch.schema.statuses import JobStatus as JobStatus

# SQLite only autoincrements INTEGER PRIMARY KEY; Postgres gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


def new_schedule_id() -> str:
    return "sch_" + uuid.uuid4().hex[:24]


class UnitState(enum.StrEnum):
    # A model unit over files not yet extracted: held back until the extract units over its
    # documents close (docbatch.domain.ledger settles it), never published meanwhile.
    waiting = "waiting"
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


OPEN_UNIT_STATES = (UnitState.waiting.value, UnitState.queued.value, UnitState.running.value)
# States a cancel closes at once (nothing runs them yet).
NOT_STARTED_UNIT_STATES = (UnitState.waiting.value, UnitState.queued.value)

# The stage that turns uploaded files into text (worker/extraction.py): a task of its own
# (queue <prefix>.extract, counts and results like any task), never asked for by a client.
EXTRACT = "extract"


class ResultStatus(enum.StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_job_id)
    tenant: Mapped[str] = mapped_column(String(64), index=True, default="default")
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(24), default=JobStatus.queued.value)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    document_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Copy earlier succeeded results of identical documents instead of computing (domain/reuse.py).
    reuse_results: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Data lifecycle (docbatch.domain.deletion): set when the job is being deleted; its rows
    # go in batches and the job row last. ``delete_left`` is what remains, per table.
    deleting_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    delete_left: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    delete_reason: Mapped[str | None] = mapped_column(String(16))  # request | retention
    # Deleted this many days after it finished (None: the tenant's, else the setting's).
    retention_days: Mapped[int | None] = mapped_column(Integer)
    # False: the original bytes of its files are dropped once extracted (None: the tenant's).
    keep_originals: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        Index("ix_jobs_tenant_created", "tenant", "created_at"),
        Index("ix_jobs_deleting", "deleting_at"),
        Index("ix_jobs_finished", "finished_at"),
    )


class JobTask(Base):
    """One requested task of a job, with its parameters and live counters."""

    __tablename__ = "job_tasks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    task: Mapped[str] = mapped_column(String(24), primary_key=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    total: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    cancelled: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    chunks: Mapped[int] = mapped_column(BigInteger, default=0)
    # Of ``succeeded``, the results copied from earlier jobs (docbatch.domain.reuse), so a
    # poll reads it here rather than counting the job's results.
    reused: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    custom_id: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    content_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("job_id", "seq", name="uq_documents_job_seq"),
        UniqueConstraint("job_id", "custom_id", name="uq_documents_job_custom_id"),
        # Result reuse looks earlier documents up by content.
        Index("ix_documents_content_hash", "content_hash"),
    )


class DocumentFile(Base):
    """The original file of a document submitted as a file (PDF, DOCX, e-mail, ...).

    The bytes are a blob (``docbatch.domain.blobs``: a Postgres large object, or a row of
    ``blobs`` on SQLite) named by ``blob_oid``; ``sha256`` is theirs. A file over the
    extraction size limit is not stored (``blob_oid`` NULL) and fails at extraction.
    ``parent_document_id`` links an e-mail attachment to its message."""

    __tablename__ = "document_files"

    document_id: Mapped[int] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    blob_oid: Mapped[int | None] = mapped_column(BigInteger)
    parent_document_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_document_files_job", "job_id"),
        # Extraction reuse looks earlier files up by their bytes.
        Index("ix_document_files_sha256", "sha256"),
    )


class Original(Base):
    """A tenant's original file bytes, stored once per content (``sha256`` within the
    tenant, never across tenants) and shared by every ``document_files`` row with that
    content; ``refs`` counts those rows. The blob is unlinked when the last one goes
    (docbatch.domain.originals)."""

    __tablename__ = "originals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    blob_oid: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    refs: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("tenant", "sha256", name="uq_originals_tenant_sha256"),
        Index("ix_originals_blob", "blob_oid"),
    )


class Blob(Base):
    """Blob bytes on SQLite (``docbatch run``), which has no large objects."""

    __tablename__ = "blobs"

    oid: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Unit(Base):
    """A work unit: the documents ``seq_lo..seq_hi`` of one job, for one task.

    This is what a queue message names. Its ``state`` moves
    queued -> running -> done | failed | cancelled, always in Postgres first.
    """

    __tablename__ = "units"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(24))
    queue: Mapped[str] = mapped_column(String(100))
    seq_lo: Mapped[int] = mapped_column(Integer)
    seq_hi: Mapped[int] = mapped_column(Integer)
    est_tokens: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default=UnitState.queued.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # When its id was last sent to the broker. A queued unit without one is in the backlog:
    # the dispatcher (docbatch.domain.dispatch) sends it, in fair order across tenants.
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(200))
    # Touched every few seconds by the worker running the unit; the reconciler republishes
    # a running unit whose heartbeat is older than DOCBATCH_RUNNING_LEASE_SECONDS.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_units_job_state", "job_id", "state"),
        Index("ix_units_state_published", "state", "published_at"),
        # The oldest queued unit of each deployment (a metric read at every scrape).
        Index(
            "ix_units_queued_age",
            "task",
            "published_at",
            postgresql_where=text("state = 'queued'"),
            sqlite_where=text("state = 'queued'"),
        ),
        # The backlog the dispatcher reads: queued units not yet sent, per queue and job,
        # in id order (a job's next units are the first entries of its range).
        Index(
            "ix_units_backlog",
            "queue",
            "job_id",
            "id",
            postgresql_where=text("state = 'queued' AND dispatched_at IS NULL"),
            sqlite_where=text("state = 'queued' AND dispatched_at IS NULL"),
        ),
        # Units sent and not yet claimed: a few per queue (DOCBATCH_DISPATCH_DEPTH) whatever
        # the backlog, read by every top-up and reconciler pass.
        Index(
            "ix_units_sent",
            "queue",
            "dispatched_at",
            postgresql_where=text("state = 'queued' AND dispatched_at IS NOT NULL"),
            sqlite_where=text("state = 'queued' AND dispatched_at IS NOT NULL"),
        ),
    )


class UnitTally(Base):
    """The open units of a job per task, queue and state (waiting, queued, running): how
    many, their documents and estimated tokens.

    Kept by Postgres triggers on ``units`` (migration 0013), so every statement that
    inserts, moves or deletes units keeps it exact, redeliveries and cancel sweeps
    included; the job's rows go when it ends (``ledger.finalize_job_if_done``). What it
    answers without reading the backlog: is the job done, a tenant's queued documents
    and tokens (docbatch.domain.quotas), units queued per queue (the api's metrics). On
    SQLite it stays empty and those reads count the units (docbatch.domain.tallies).
    """

    __tablename__ = "unit_tallies"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    task: Mapped[str] = mapped_column(String(24), primary_key=True)
    queue: Mapped[str] = mapped_column(String(100), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    units: Mapped[int] = mapped_column(BigInteger, default=0)
    documents: Mapped[int] = mapped_column(BigInteger, default=0)
    est_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class Result(Base):
    """The outcome of one task on one document; unique per (document, task)."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    unit_id: Mapped[int | None] = mapped_column(BigInteger)
    task: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(16))
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    vectors: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[str | None] = mapped_column(Text)
    model_revision: Mapped[str | None] = mapped_column(String(100))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Copied from an earlier job's result for the same content, model and parameters.
    reused: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")

    __table_args__ = (
        UniqueConstraint("document_id", "task", name="uq_results_document_task"),
        Index("ix_results_job_status", "job_id", "status"),
        Index("ix_results_unit", "unit_id"),
    )


class Schedule(Base):
    """A recurring job: every period of ``cron`` (UTC) the documents of ``source`` get ``tasks``."""

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_schedule_id)
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(200))
    cron: Mapped[str] = mapped_column(String(200))
    source: Mapped[dict[str, Any]] = mapped_column(JSON)
    tasks: Mapped[list[Any]] = mapped_column(JSON)
    reuse_results: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Handed to every job it makes.
    webhook_url: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The zone ``cron`` is read in (an IANA name; "0 2 * * *" is 02:00 there, DST included).
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    # Each run takes only the files new or changed (size or mtime) since they last went in.
    only_changed: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")

    __table_args__ = (UniqueConstraint("tenant", "name", name="uq_schedules_tenant_name"),)


class ScheduleFile(Base):
    """A file an ``only_changed`` schedule has put in a job, with the fingerprint it had."""

    __tablename__ = "schedule_files"

    schedule_id: Mapped[str] = mapped_column(
        ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(100))


class ScheduleRun(Base):
    """One firing of a schedule; the primary key (schedule, period) makes it exactly once."""

    __tablename__ = "schedule_runs"

    schedule_id: Mapped[str] = mapped_column(
        ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(Text)
    fired_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    fired_by: Mapped[str | None] = mapped_column(String(200))


class Tenant(Base):
    """Who owns jobs. ``webhook_secret`` signs this tenant's webhook calls."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    webhook_secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Overrides of DOCBATCH_RETENTION_DAYS and the jobs' keep_originals default (None: the
    # setting's); `docbatch tenants set-retention`.
    retention_days: Mapped[int | None] = mapped_column(Integer)
    keep_originals: Mapped[bool | None] = mapped_column(Boolean)
    # Share of each queue's workers when tenants compete (docbatch.domain.fairshare).
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    # Quotas (docbatch.domain.quotas); NULL: the settings default (DOCBATCH_TENANT_MAX_*),
    # 0: no limit.
    max_queued_documents: Mapped[int | None] = mapped_column(BigInteger)
    max_queued_tokens: Mapped[int | None] = mapped_column(BigInteger)
    max_documents_per_day: Mapped[int | None] = mapped_column(BigInteger)
    max_concurrent_units: Mapped[int | None] = mapped_column(BigInteger)


class FairShare(Base):
    """The dispatcher's clock per queue: each tenant's virtual time (tokens sent divided by
    its weight, docbatch.domain.fairshare); the row with tenant ``""`` is the queue's own."""

    __tablename__ = "fair_shares"

    queue: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    vtime: Mapped[float] = mapped_column(Float, default=0.0)


class Usage(Base):
    """What one finished unit used: written once per unit (docbatch.domain.usage.record),
    in the transaction that closes it, so a unit run twice is counted once."""

    __tablename__ = "usage"

    unit_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(40))
    task: Mapped[str] = mapped_column(String(24))
    queue: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16))
    documents: Mapped[int] = mapped_column(Integer, default=0)
    reused_documents: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    generated_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    chunks: Mapped[int] = mapped_column(BigInteger, default=0)
    model_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    extract_files: Mapped[int] = mapped_column(Integer, default=0)
    extract_pages: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_usage_tenant_finished", "tenant", "finished_at"),
        # A job's rows: the dashboard's throughput chart (docbatch.domain.stats).
        Index("ix_usage_job", "job_id"),
    )


class ApiKey(Base):
    """An API key: ``dbk_<key_id>_<secret>``; only the sha256 of the whole key is stored."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class AdminAudit(Base):
    """One change made with the admin key (``/v1/admin/...``): who, what, when."""

    __tablename__ = "admin_audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(32))  # key.create, key.revoke
    tenant: Mapped[str | None] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(32))
    # The caller's address as the api saw it, and the request id of its log lines.
    client: Mapped[str | None] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(64))


class WebhookDelivery(Base):
    """The webhook outbox: written with the job's terminal status, sent after commit."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # NULL for a job.deleted delivery: its job is gone, its body is ``payload``.
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    tenant: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(40))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("job_id", "event", name="uq_webhook_deliveries_job_event"),
        Index("ix_webhook_deliveries_due", "delivered_at", "next_attempt_at"),
    )


def new_file_id() -> str:
    return "file-" + uuid.uuid4().hex[:24]


def new_batch_id() -> str:
    return "batch_" + uuid.uuid4().hex[:24]


class StoredFile(Base):
    """A file of the OpenAI-compatible API (``/v1/files``): an uploaded batch input, or a
    batch's output or error file. The bytes live in a Postgres large object
    (``domain/blobs.py``); an output file has none until its batch is finalized and is
    rendered from the results meanwhile."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_file_id)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    blob_oid: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # OpenAI's expires_after (files.create) or a batch's output_expires_after: deleted then.
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_files_tenant_created", "tenant", "created_at"),
        Index("ix_files_expires", "expires_at"),
    )


class Batch(Base):
    """An OpenAI-style batch: a view of one job (``job_id``) built from an input file.

    Lines rejected while the job was built (unknown model, bad body) are kept in
    ``line_errors`` and go to the error file; every other line is a document of the job
    (an embeddings line with a list ``input`` is one document per input)."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_batch_id)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    endpoint: Mapped[str] = mapped_column(String(100))
    task: Mapped[str] = mapped_column(String(24))
    model: Mapped[str | None] = mapped_column(Text)
    input_file_id: Mapped[str] = mapped_column(String(40))
    output_file_id: Mapped[str] = mapped_column(String(40))
    error_file_id: Mapped[str] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(16))
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    # Whole-batch validation errors (OpenAI's ``errors.data``); set means status ``failed``.
    errors: Mapped[list[Any] | None] = mapped_column(JSON)
    line_errors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    total: Mapped[int] = mapped_column(Integer, default=0)
    multi_input: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    cancelling_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    expired_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finalized_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # OpenAI's ``usage`` (input, output and total tokens), written when finalized.
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Seconds after finalizing that the output and error files expire (output_expires_after).
    output_expires_after: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_batches_tenant_created", "tenant", "created_at"),)
