"""Creating, reading and cancelling jobs: plain functions over a Session.

Creation writes the job, its documents and its work units in the caller's transaction
and puts the queued units in its outbox (docbatch.domain.outbox), so they are published
once it commits; a cancel puts the job's cancel sweep there. Open the transaction with
``unit_of_work(settings)``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import DateTime, String, func, insert, literal, select, true
from sqlalchemy.orm import Session

from docbatch.domain import closing, ledger, originals, presence, quotas, tallies, tenants
from docbatch.domain.documents import INSERT_BATCH, DocumentWriter
from docbatch.domain.files import FileDocument
from docbatch.domain.outbox import outbox
from docbatch.schema.errors import Conflict, InputError, NotFound
from docbatch.schema.models import DocumentIn, JobPublic, TaskCounts
from docbatch.schema.settings import Settings
from docbatch.schema.tables import (
    EXTRACT,
    NOT_STARTED_UNIT_STATES,
    Document,
    DocumentFile,
    Job,
    JobStatus,
    JobTask,
    Result,
    ResultStatus,
    Unit,
    UnitState,
    utcnow,
)
from docbatch.schema.validation import validate_row, validate_tasks

CHARS_PER_TOKEN = 4  # a rough estimate, good enough to size units evenly


@dataclass
class NewJob:
    job: Job
    queued_units: int = 0  # units queued at once (the backlog); the others wait for files
    unit_ids: list[int] = field(default_factory=list)  # those queued units, in id order


def parse_tasks(raw: Any, settings: Settings) -> list[dict[str, Any]]:
    """Validate the ``tasks`` field; returns one params dict per task (with ``type``)."""
    return validate_tasks(raw, settings)


def find_idempotent(
    session: Session, tenant: str, key: str | None, request_hash: str
) -> Job | None:
    if not key:
        return None
    job = session.scalar(select(Job).where(Job.tenant == tenant, Job.idempotency_key == key))
    if job is not None and job.request_hash != request_hash:
        raise Conflict(
            f"Idempotency-Key {key!r} was used for job {job.id} with a different request body"
        )
    return job


def _store_file(
    session: Session, tenant: str, doc: FileDocument, settings: Settings
) -> dict[str, Any]:
    """The file's bytes as the tenant's original (stored once per content:
    docbatch.domain.originals); not read at all when it is over the extraction limit: it
    fails alone at extraction, saying so."""
    info: dict[str, Any] = {"name": doc.custom_id, "bytes": doc.size, "sha256": None}
    info["blob_oid"] = None
    if doc.size > settings.extract_max_bytes:
        return info
    with doc.opener() as fh:
        oid, size, sha = originals.store(session, tenant, fh, settings.extract_max_bytes)
    info.update(bytes=size, blob_oid=oid, sha256=sha)
    return info


def insert_files(session: Session, job_id: str, files: dict[int, dict[str, Any]]) -> None:
    """The ``document_files`` rows of the job's documents ``seq -> file info``."""
    seqs = sorted(files)
    for i in range(0, len(seqs), INSERT_BATCH):
        part = seqs[i : i + INSERT_BATCH]
        ids = session.execute(
            select(Document.seq, Document.id).where(
                Document.job_id == job_id, Document.seq.in_(part)
            )
        ).all()
        rows = [{"document_id": doc_id, "job_id": job_id, **files[seq]} for seq, doc_id in ids]
        session.execute(insert(DocumentFile), rows)


def _inline_extractions(session: Session, job_id: str, now: Any) -> int:
    """In a job with files, the documents sent as text need no extraction: each gets its
    ``extract`` result now (``inline``), so every document of the job has one and the
    extract counts cover the whole job. One ``INSERT ... SELECT`` whatever the job's
    size (nothing per document in the api). Returns how many."""
    chars = func.length(Document.text)
    if session.get_bind().dialect.name == "postgresql":
        output = func.json_build_object("kind", "text", "inline", true(), "chars", chars)
    else:  # SQLite's JSON1
        output = func.json_object("kind", "text", "inline", func.json("true"), "chars", chars)
    is_file = select(DocumentFile.document_id).where(DocumentFile.document_id == Document.id)
    rows = select(
        literal(job_id, String),
        Document.id,
        literal(EXTRACT, String),
        literal(ResultStatus.succeeded.value, String),
        output,
        literal("inline", String),
        literal(now, DateTime(timezone=True)),
    ).where(Document.job_id == job_id, ~is_file.exists())
    columns = ["job_id", "document_id", "task", "status", "output", "model_id", "created_at"]
    session.execute(insert(Result).from_select(columns, rows))
    counted = select(func.count()).where(Result.job_id == job_id, Result.task == EXTRACT)
    return int(session.scalar(counted) or 0)  # the job's only extract results so far


class Router(Protocol):
    """Sends each document of a job to ONE of its tasks instead of all of them: the lines
    of an OpenAI batch name their own models (docbatch.domain.openai.convert.RequestLines).
    The documents come grouped by task (a unit covers one task's documents only);
    ``tasks()`` is read once every document has been, so a task's params may be learnt
    from its first document."""

    def task_of(self, doc: DocumentIn) -> str:
        """The key (deployment name) of the one task ``doc`` runs."""
        ...

    def tasks(self) -> list[dict[str, Any]]:
        """The params of every task the documents were sent to."""
        ...


@dataclass
class UnitCutter:
    """Cuts a job's documents into unit ranges as they stream past: text documents by
    estimated tokens, files by count (they are extracted first, so a range never mixes
    the two), and, for a routed job, never across two tasks' documents."""

    settings: Settings
    # lo, hi, est, files, the one task of a routed range (None: every task of the job)
    ranges: list[tuple[int, int, int, bool, str | None]] = field(default_factory=list)
    lo: int = 0
    tokens: int = 0
    docs: int = 0
    files: bool = False
    task: str | None = None

    def add(self, seq: int, est: int, is_file: bool, task: str | None = None) -> None:
        s = self.settings
        full = (
            self.docs >= s.extract_unit_files
            if self.files
            else (self.tokens + est > s.unit_tokens or self.docs >= s.unit_max_documents)
        )
        if self.docs and (is_file != self.files or task != self.task or full):
            self.close(seq)
        self.tokens += est
        self.docs += 1
        self.files = is_file
        self.task = task

    def close(self, seq: int) -> None:
        self.ranges.append((self.lo, seq - 1, self.tokens, self.files, self.task))
        self.lo, self.tokens, self.docs = seq, 0, 0


def _own_unit_size(settings: Settings, task: str) -> int:
    """The deployment's own DOCBATCH_MODELS__<TASK>__UNIT_TOKENS when it is bigger than
    DOCBATCH_UNIT_TOKENS (0: the shared cut serves it)."""
    try:
        own = settings.model_for(task).unit_tokens
    except KeyError:  # not a deployment of these settings: the shared cut
        return 0
    return own if own > settings.unit_tokens else 0


def _merged(
    ranges: list[tuple[int, int, int, bool, str | None]], task: str, settings: Settings
) -> list[tuple[int, int, int]]:
    """The text ranges of ``task`` (files wait for their extraction unit by unit: never
    merged) with neighbours joined up to the deployment's own unit size and
    DOCBATCH_UNIT_MAX_DOCUMENTS: (seq_lo, seq_hi, estimated tokens)."""
    limit = _own_unit_size(settings, task)
    out: list[tuple[int, int, int]] = []
    for lo, hi, est, is_files, only in ranges:
        if is_files or (only is not None and only != task):
            continue
        if out:
            a, b, tokens = out[-1]
            if b + 1 == lo and tokens + est <= limit and hi - a + 1 <= settings.unit_max_documents:
                out[-1] = (a, hi, tokens + est)
                continue
        out.append((lo, hi, est))
    return out


def create_job(
    session: Session,
    settings: Settings,
    *,
    tenant: str,
    tasks: list[dict[str, Any]],
    documents: Iterable[tuple[dict | DocumentIn | FileDocument, int | None]],
    name: str | None = None,
    priority: int = 0,
    webhook_url: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    reuse_results: bool = False,
    retention_days: int | None = None,
    keep_originals: bool | None = None,
    router: Router | None = None,
) -> NewJob:
    """Write a job with its documents and units, its queued units into the outbox; raises
    InputError (QuotaExceeded: over a tenant quota) before anything commits.

    Every document runs every task, unless a ``router`` sends each to one task (then
    ``tasks`` is ignored: the router's are read after the documents).

    ``documents`` yields ``(document, ndjson line number or None)``: a raw dict is validated
    here (so a stream is read once), a ``DocumentIn`` was validated already, a
    ``FileDocument`` is stored as a blob and extracted before the model tasks see it
    (an ``extract`` unit per few files; the model units over them wait: docbatch.domain.waiting).
    """
    policy = tenants.storage_policy(session, tenant, settings)
    if (
        retention_days is not None
        and policy.retention_days
        and retention_days > policy.retention_days
    ):
        raise InputError(
            "retention_days",
            f"{retention_days} days is longer than this tenant's retention of "
            f"{policy.retention_days} days; give at most {policy.retention_days}",
        )
    quotas.check(session, settings, tenant)  # at a limit already: before reading the body
    job = Job(
        tenant=tenant,
        retention_days=retention_days,
        keep_originals=policy.keep_originals if keep_originals is None else keep_originals,
        name=name,
        priority=priority,
        webhook_url=webhook_url,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        status=JobStatus.queued.value,
        reuse_results=reuse_results,
    )
    session.add(job)
    session.flush()
    cutter = UnitCutter(settings)
    # Nothing per document is kept across batches: a repeated custom_id is the unique
    # key's to find (docbatch.domain.documents), so the api's memory stays flat.
    writer = DocumentWriter(session, job.id)
    routed: Counter[str] = Counter()  # documents per task of a routed job
    files: dict[int, dict[str, Any]] = {}
    seq = 0
    try:
        for index, (raw, line) in enumerate(documents):
            file_doc = raw if isinstance(raw, FileDocument) else None
            if file_doc is not None:
                # The same rules as any document's custom_id and metadata (the text later).
                raw = {
                    "custom_id": file_doc.custom_id,
                    "text": "file",
                    "metadata": file_doc.metadata,
                }
            doc, meta_json = validate_row(raw, settings, index=index, line=line)
            if seq >= settings.max_documents_per_job:
                raise InputError(
                    "documents",
                    f"more than {settings.max_documents_per_job} documents; that is the limit "
                    "(DOCBATCH_MAX_DOCUMENTS_PER_JOB)",
                    line=line,
                )
            if file_doc is not None:
                info = _store_file(session, tenant, file_doc, settings)
                files[seq] = info
                text = ""
                # Until extracted, a file's hash is its bytes' (the text's replaces it).
                content_hash = info["sha256"] or hashlib.sha256(b"").hexdigest()
                est = max(1, min(info["bytes"], settings.extract_max_bytes) // CHARS_PER_TOKEN)
            else:
                text = doc.text
                content_hash = hashlib.sha256(text.encode()).hexdigest()
                est = max(1, len(text) // CHARS_PER_TOKEN)
            routed_to = router.task_of(doc) if router is not None else None
            if routed_to is not None:
                routed[routed_to] += 1
            cutter.add(seq, est, file_doc is not None, routed_to)
            row = {
                "job_id": job.id,
                "seq": seq,
                "custom_id": doc.custom_id,
                "text": text,
                "meta": doc.metadata,
                "meta_json": meta_json,
                "content_hash": content_hash,
            }
            writer.add(row, index=index, line=line)
            seq += 1
        writer.flush()
    except InputError:
        # A repeat among the rows not written yet came earlier in the upload: it is the
        # error to report.
        earlier = writer.first_duplicate()
        if earlier is not None:
            raise earlier from None
        raise
    if seq == 0:
        raise InputError("documents", "is empty; submit at least one document")
    cutter.close(seq)
    if files:
        insert_files(session, job.id, files)
    job.document_count = seq
    now = utcnow()
    if router is not None:
        tasks = router.tasks()
    # A job task is keyed by its deployment's name (a task's default deployment is named
    # after the task): the key of its counts, units and results.
    names = [t.get("model") or t["type"] for t in tasks]
    if set(routed) - set(names):
        raise ValueError(f"documents routed to {sorted(set(routed) - set(names))}: not tasks")
    for key, params in zip(names, tasks, strict=True):
        total = routed[key] if router is not None else seq
        session.add(JobTask(job_id=job.id, task=key, params=params, total=total))
    if files:
        inline = _inline_extractions(session, job.id, now)
        session.add(JobTask(job_id=job.id, task=EXTRACT, params={}, total=seq, succeeded=inline))
    unit_rows = []
    own = {task: _own_unit_size(settings, task) for task in names}
    for r_lo, r_hi, est, is_files, only in cutter.ranges:
        stages = [(EXTRACT, UnitState.queued)] if is_files else []
        held = UnitState.waiting if is_files else UnitState.queued
        stages += [
            (task, held)
            for task in ([only] if only is not None else names)
            if is_files or not own.get(task)
        ]
        unit_rows += [
            {
                "job_id": job.id,
                "task": task,
                "queue": settings.queue_for(task),
                "seq_lo": r_lo,
                "seq_hi": r_hi,
                "est_tokens": est,
                "state": state.value,
                "published_at": now,
            }
            for task, state in stages
        ]
    for task in names:
        if own[task]:
            unit_rows += [
                {
                    "job_id": job.id,
                    "task": task,
                    "queue": settings.queue_for(task),
                    "seq_lo": r_lo,
                    "seq_hi": r_hi,
                    "est_tokens": est,
                    "state": UnitState.queued.value,
                    "published_at": now,
                }
                for r_lo, r_hi, est in _merged(cutter.ranges, task, settings)
            ]
    one_statement = tallies.kept(session)  # their trigger then runs once a batch, not a row
    for i in range(0, len(unit_rows), INSERT_BATCH):
        batch = unit_rows[i : i + INSERT_BATCH]
        if one_statement:
            session.execute(insert(Unit).values(batch))
        else:
            session.execute(insert(Unit), batch)
    session.flush()
    session.flush()
    quotas.check(session, settings, tenant, job)  # over a limit: the caller rolls back
    # The queued units wait in the backlog; the dispatcher sends them in fair order.
    queued = session.execute(
        select(Unit.id, Unit.queue)
        .where(Unit.job_id == job.id, Unit.state == UnitState.queued.value)
        .order_by(Unit.id)
    ).all()
    box = outbox(session)
    for queue in dict.fromkeys(u.queue for u in queued):
        box.add_dispatch(queue)
    return NewJob(job=job, queued_units=len(queued), unit_ids=[int(u.id) for u in queued])


def task_names(session: Session, job_id: str) -> list[str]:
    """The job's tasks, ``extract`` last when it has files (the results' columns)."""
    names = list(session.scalars(select(JobTask.task).where(JobTask.job_id == job_id)))
    return sorted(names, key=lambda t: t == EXTRACT)


def get_job(session: Session, tenant: str | None, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or (tenant is not None and job.tenant != tenant):
        raise NotFound(f"job {job_id} not found")
    return job


def job_public(session: Session, job: Job, settings: Settings | None = None) -> JobPublic:
    """The public job document; with ``settings``, warnings about deployments with work
    left and no live worker (``JobPublic.warnings``)."""
    rows = session.scalars(select(JobTask).where(JobTask.job_id == job.id)).all()
    public = public_of(job, rows)
    if settings is not None:
        public.warnings = unserved(session, public, settings)
    return public


def unserved(conn: Any, public: JobPublic, settings: Settings) -> list[str]:
    """Warnings for the job's deployments that have work left and no live worker."""
    status = JobStatus(public.status)
    if status.terminal or status in (JobStatus.cancelling, JobStatus.deleting):
        return []
    waiting = [k for k, c in public.counts.items() if c.pending > 0 and k != EXTRACT]
    return presence.unserved_warnings(conn, waiting, tasks=settings.models)


def public_of(job: Any, task_rows: Iterable[Any]) -> JobPublic:
    """The public job document from the job's row and its task rows (ORM objects or plain
    rows with the same names): the one place its counts, timing and rate are computed.
    Every count is a counter of the task row (docbatch.domain.closing moves them), so this
    costs the same for a job of ten documents and one of a million."""
    rows = list(task_rows)
    counts = {
        r.task: TaskCounts(
            total=r.total,
            succeeded=r.succeeded,
            failed=r.failed,
            cancelled=r.cancelled,
            pending=r.total - r.succeeded - r.failed - r.cancelled,
            chunks=r.chunks,
            tokens=r.tokens,
            reused=r.reused or 0,
        )
        for r in rows
    }
    elapsed = None
    rate = None
    if job.started_at is not None:
        end = job.finished_at or utcnow()
        start = job.started_at
        if start.tzinfo is None:  # SQLite returns naive datetimes
            end = end.replace(tzinfo=None)
        elapsed = max((end - start).total_seconds(), 1e-9)
        done = sum(c.succeeded + c.failed for c in counts.values())
        rate = done / elapsed
    deleting = getattr(job, "deleting_at", None) is not None
    return JobPublic(
        id=job.id,
        name=job.name,
        status=JobStatus.deleting.value if deleting else job.status,
        priority=job.priority,
        tasks={r.task: r.params for r in rows},
        counts=counts,
        documents=job.document_count,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        elapsed_seconds=elapsed,
        documents_per_second=rate,
        reuse_results=bool(job.reuse_results),
        delete_left=(dict(job.delete_left or {}) if deleting else None),
    )


def list_jobs(
    session: Session,
    tenant: str | None,
    *,
    status: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> tuple[list[Job], int]:
    query = select(Job)
    count_q = select(func.count()).select_from(Job)
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
        count_q = count_q.where(Job.tenant == tenant)
    if status:
        query = query.where(Job.status == status)
        count_q = count_q.where(Job.status == status)
    if before:
        anchor = session.get(Job, before)
        if anchor is not None and (tenant is None or anchor.tenant == tenant):
            query = query.where(Job.created_at < anchor.created_at)
    jobs = session.scalars(query.order_by(Job.created_at.desc()).limit(limit)).all()
    return list(jobs), session.scalar(count_q) or 0


def cancel_job(
    session: Session, tenant: str | None, job_id: str, *, inline_documents: int = 0
) -> Job:
    """Mark the job ``cancelling`` and return at once (a job already ended is left as is).

    When its queued units hold at most ``inline_documents`` documents they are closed
    here (one bounded batch: a small job is ``cancelled`` in the response). A bigger
    job's are closed in batches afterwards (``cancel_queued_batch``, run by the
    maintenance task docbatch.worker.cancel, whose message goes to the outbox; a unit
    whose message reaches a worker first is cancelled there), so cancelling a
    million-document job is as quick as a small one. Running units stop at their next
    batch boundary; the job becomes ``cancelled`` when its last unit closes.
    """
    job = get_job(session, tenant, job_id)
    job = ledger.lock_job(session, job.id)
    if JobStatus(job.status).terminal:
        return job
    if job.status == JobStatus.cancelling.value:  # asked again: send the sweep again
        outbox(session).add_cancel(job.id)
        return job
    job.status = JobStatus.cancelling.value
    if inline_documents > 0:
        queued = tallies.not_started_documents(session, job.id)  # not the whole backlog
        if queued <= inline_documents:
            session.flush()
            cancel_queued_batch(session, job.id, inline_documents)
    if job.status == JobStatus.cancelling.value:
        outbox(session).add_cancel(job.id)
    return job


def cancel_queued_batch(session: Session, job_id: str, max_documents: int) -> tuple[int, bool]:
    """Close queued units of a cancelling job as cancelled, about ``max_documents``
    documents' worth (at least one unit), in the caller's transaction; returns (units
    closed, whether queued units remain). Ends the job if no unit is left open.

    Each batch holds the job lock only for itself, so workers writing results of the
    same job wait one batch at most; counts add up after every batch (the cancelled
    rows and the counters move together in ``closing.cancel_not_started``).
    """
    job = ledger.lock_job(session, job_id)
    if job.status != JobStatus.cancelling.value:
        return 0, False
    rows = session.execute(
        select(Unit.id, Unit.seq_lo, Unit.seq_hi, Unit.queue)
        .where(Unit.job_id == job_id, Unit.state.in_(NOT_STARTED_UNIT_STATES))
        .order_by(Unit.id)
        .limit(max(1, max_documents) + 1)
    ).all()
    take: list[int] = []
    documents = 0
    for row in rows:
        if take and documents + (row.seq_hi - row.seq_lo + 1) > max_documents:
            break
        take.append(row.id)
        documents += row.seq_hi - row.seq_lo + 1
    closed = closing.cancel_not_started(session, job_id, take)
    for queue in dict.fromkeys(row.queue for row in rows[: len(take)]):
        # Units it closed may have been sent: their queues have room for others' units.
        outbox(session).add_dispatch(queue)
    ledger.finalize_job_if_done(session, job)
    return closed, len(take) < len(rows)
