"""Recording what the extract stage found: text into documents, results, attachments.

``record`` writes one extract unit's outcomes in the caller's transaction (the job row
locked first, as for every unit close):

- a file that became text: the document's ``text`` and ``content_hash`` (of the text,
  so model results are reused across a PDF and the same text sent as JSONL), and an
  ``extract`` result with the format, the library and its version, the page map and
  sections (offset -> page, heading or e-mail part) and the file's metadata;
- a file that did not: a failed ``extract`` result with the reason (its model tasks
  fail with it when their units settle: ``docbatch.domain.waiting``);
- attachments (an e-mail's files) become documents of their own after the job's last
  one, named ``<parent custom_id>/<file name>``, linked by ``parent_document_id``, their
  bytes kept as blobs; the files of an archive take the archive's place (the archive
  itself is not a document once unpacked, and the job's counts say so);
- the caller (docbatch.worker.runner) then closes the unit in the same transaction,
  which settles the model units waiting on its documents.

Earlier extractions are reused: ``earlier`` finds a succeeded extraction of the same
bytes (sha256) by the same extractor versions for the same tenant.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from docbatch.domain import blobs, ledger
from docbatch.domain.waiting import UnitLimits
from docbatch.schema.settings import Settings
from docbatch.schema.tables import (
    EXTRACT,
    Document,
    DocumentFile,
    Job,
    JobTask,
    Result,
    ResultStatus,
    Unit,
    UnitState,
    utcnow,
)

MAX_CANDIDATES = 50


@dataclass
class Extraction:
    """One file's outcome. ``children`` (top-level files only) are every file found inside
    it, flattened: attachments (the file stays a document) or, with ``replaced``, an
    archive's members (they take its place). A child carries its own bytes in ``data``
    (kept as its original) and its ``parent``: -1 for the top-level file, ``k`` for
    ``children[k]`` (an attachment of an attachment), None for none (an archive member)."""

    name: str
    status: ResultStatus
    text: str = ""
    output: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    library: str | None = None
    data: bytes | None = None
    children: list[Extraction] = field(default_factory=list)
    replaced: bool = False
    reused: bool = False
    parent: int | None = None


@dataclass(frozen=True)
class Extractor:
    """What made an extraction: the libraries' versions (``revision``) and the settings
    that change its output (``params``); recorded on every result, matched on reuse."""

    revision: str
    params: dict[str, Any]


def earlier(
    session: Session, tenant: str, job_id: str, sha256: str, extractor: Extractor
) -> tuple[str, dict[str, Any]] | None:
    """(text, output) of an earlier succeeded extraction of the same bytes by the same
    extractor for ``tenant``, without attachments (those would need their own copies)."""
    rows = session.execute(
        select(Document.text, Result.output, Result.job_id, Result.params)
        .join(Result, Result.document_id == Document.id)
        .join(DocumentFile, DocumentFile.document_id == Document.id)
        .join(Job, Job.id == Result.job_id)
        .where(
            DocumentFile.sha256 == sha256,
            Result.task == EXTRACT,
            Result.status == ResultStatus.succeeded.value,
            Result.model_revision == extractor.revision,
            Job.tenant == tenant,
            Job.id != job_id,
        )
        .order_by(Result.id.desc())
        .limit(MAX_CANDIDATES)
    ).all()
    for text, output, source_job, params in rows:
        out = dict(output or {})
        if (params or {}) == extractor.params and not out.get("attachments"):
            out.setdefault("reused_from", source_job)
            return text, out
    return None


def files_of(session: Session, document_ids: list[int]) -> dict[int, DocumentFile]:
    rows = session.scalars(select(DocumentFile).where(DocumentFile.document_id.in_(document_ids)))
    return {f.document_id: f for f in rows}


def _result(
    job_id: str, doc_id: int, unit_id: int, ex: Extraction, extractor: Extractor
) -> dict[str, Any]:
    ok = ex.status == ResultStatus.succeeded
    return {
        "job_id": job_id,
        "document_id": doc_id,
        "unit_id": unit_id,
        "task": EXTRACT,
        "status": ex.status.value,
        "output": ex.output if ok else None,
        "vectors": None,
        "error": None if ok else ex.error,
        "model_id": ex.library or "docbatch extract",
        "model_revision": extractor.revision,
        "params": extractor.params,
        "created_at": utcnow(),
        "reused": ex.reused,
    }


def _set_text(session: Session, doc_id: int, text: str) -> None:
    session.execute(
        update(Document)
        .where(Document.id == doc_id)
        .values(text=text, content_hash=hashlib.sha256(text.encode()).hexdigest())
    )


def _unique_names(session: Session, job_id: str, names: list[str]) -> list[str]:
    """``names`` made unique within the job (``name``, ``name#2``, ...)."""
    taken = set(
        session.scalars(
            select(Document.custom_id).where(
                Document.job_id == job_id, Document.custom_id.in_(set(names))
            )
        )
    )
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}#{n}"
        taken.add(candidate)
        out.append(candidate)
    return out


def _append(
    session: Session,
    job: Job,
    groups: list[tuple[int | None, int]],
    pieces: list[Extraction],
    extractor: Extractor,
) -> tuple[int, int, list[dict[str, Any]]]:
    """New documents for ``pieces`` after the job's last one (``groups[i]``: the document
    id of the file ``pieces[i]`` came from, None for an unpacked archive, and the index in
    ``pieces`` of that file's first child); returns their seq range and their extract
    result rows (unit id filled in later)."""
    # Past every unit's range (not only past the last document: an unpacked archive's row
    # is gone, and a new document in its old place would be counted by its old unit).
    top = session.scalar(select(func.max(Unit.seq_hi)).where(Unit.job_id == job.id))
    first = int(top if top is not None else -1) + 1
    names = _unique_names(session, job.id, [p.name for p in pieces])
    rows: list[dict[str, Any]] = []
    ids: list[int] = []
    for offset, (piece, name) in enumerate(zip(pieces, names, strict=True)):
        top_id, base = groups[offset]
        if piece.parent is None:
            parent = None
        elif piece.parent < 0:
            parent = top_id
        else:
            parent = ids[base + piece.parent]
        text = piece.text if piece.status == ResultStatus.succeeded else ""
        doc_id = int(
            session.execute(
                insert(Document)
                .values(
                    job_id=job.id,
                    seq=first + offset,
                    custom_id=name,
                    text=text,
                    meta=None,
                    content_hash=hashlib.sha256(text.encode()).hexdigest(),
                )
                .returning(Document.id)
            ).scalar_one()
        )
        ids.append(doc_id)
        oid, size, sha = blobs.store(session, io.BytesIO(piece.data or b""))
        session.execute(
            insert(DocumentFile).values(
                document_id=doc_id,
                job_id=job.id,
                name=name,
                bytes=size,
                sha256=sha,
                blob_oid=oid,
                parent_document_id=parent,
            )
        )
        if piece.status == ResultStatus.succeeded:
            piece.output.update(custom_id=name)
        rows.append(_result(job.id, doc_id, 0, piece, extractor))
    return first, first + len(pieces) - 1, rows


def record(
    session: Session,
    settings: Settings,
    unit: Unit,
    job: Job,
    outcomes: dict[int, Extraction],
    extractor: Extractor,
) -> None:
    """Write an extract unit's ``outcomes`` (document id -> Extraction); the caller closes
    the unit."""
    rows: list[dict[str, Any]] = []
    pieces: list[Extraction] = []
    groups: list[tuple[int | None, int]] = []
    removed = 0
    for doc_id, ex in outcomes.items():
        if ex.replaced:  # an unpacked archive: its files take its place
            oid = session.scalar(
                select(DocumentFile.blob_oid).where(DocumentFile.document_id == doc_id)
            )
            if oid is not None:
                blobs.delete(session, oid)
            session.execute(delete(Document).where(Document.id == doc_id))
            removed += 1
        else:
            if ex.status == ResultStatus.succeeded:
                _set_text(session, doc_id, ex.text)
            rows.append(_result(job.id, doc_id, unit.id, ex, extractor))
        groups.extend([(None if ex.replaced else doc_id, len(pieces))] * len(ex.children))
        pieces.extend(ex.children)
    ledger.write_results(session, rows)
    added = len(pieces)
    if added or removed:
        session.execute(
            update(JobTask)
            .where(JobTask.job_id == job.id)
            .values(total=JobTask.total + added - removed)
        )
        job.document_count += added - removed
    if pieces:
        lo, hi, appended = _append(session, job, groups, pieces, extractor)
        _add_range(session, settings, job, lo, hi, appended)


def _add_range(
    session: Session,
    settings: Settings,
    job: Job,
    lo: int,
    hi: int,
    results: list[dict[str, Any]],
) -> None:
    """Units over appended documents ``lo..hi``, extracted already: an extract unit that
    closes at once (counting their extract results) and, per model task, a waiting unit
    that this close settles (queued, cut by their text)."""
    now = utcnow()
    tasks = list(session.scalars(select(JobTask.task).where(JobTask.job_id == job.id)))
    extract_unit = None
    for task in tasks:
        is_extract = task == EXTRACT
        unit = Unit(
            job_id=job.id,
            task=task,
            queue=settings.queue_for(task),
            seq_lo=lo,
            seq_hi=hi,
            est_tokens=0,
            state=(UnitState.running if is_extract else UnitState.waiting).value,
            attempts=1 if is_extract else 0,
            published_at=now,
            claimed_at=now if is_extract else None,
        )
        session.add(unit)
        if is_extract:
            extract_unit = unit
    session.flush()
    assert extract_unit is not None
    for row in results:
        row["unit_id"] = extract_unit.id
    ledger.write_results(session, results)
    ledger.close_unit(session, extract_unit, UnitState.done, limits=UnitLimits.of(settings))
