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

Earlier extractions are reused: ``earlier`` finds, for all of a unit's files in one
statement, a succeeded extraction of the same bytes (sha256) by the same extractor
versions for the same tenant; its text is copied inside the database.

Texts and the bytes of files found inside others arrive spooled on disk (the worker
never holds them all) and are written here, in the closing transaction, in set-based
statements: a few round trips per thousand files, not per file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from docbatch.domain import ledger, originals
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
# Appended documents are written this many at a time, or this many bytes of text and
# original files, whichever comes first (the worker's memory while writing).
BATCH_ROWS = 1000
BATCH_BYTES = 32 << 20
# Names per IN list (the drivers' limits on bound parameters).
IN_CHUNK = 1000


@dataclass
class Extraction:
    """One file's outcome. ``children`` (top-level files only) are every file found inside
    it, flattened: attachments (the file stays a document) or, with ``replaced``, an
    archive's members (they take its place). A child's own bytes are spooled at
    ``original`` (kept as its blob) and it names its ``parent``: -1 for the top-level
    file, ``k`` for ``children[k]`` (an attachment of an attachment), None for none (an
    archive member). The extracted text is spooled at ``text_file`` (UTF-8), or, with
    ``reused_from``, copied from that earlier document."""

    name: str
    status: ResultStatus
    output: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    library: str | None = None
    text_file: Path | None = None
    original: Path | None = None
    children: list[Extraction] = field(default_factory=list)
    replaced: bool = False
    reused_from: int | None = None
    parent: int | None = None


@dataclass(frozen=True)
class Extractor:
    """What made an extraction: the libraries' versions (``revision``) and the settings
    that change its output (``params``); recorded on every result, matched on reuse."""

    revision: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Reused:
    """An earlier extraction to copy: the document whose text it is, and its output."""

    document_id: int
    output: dict[str, Any]


def earlier(
    session: Session,
    tenant: str,
    job_id: str,
    files: dict[int, DocumentFile],
    extractor: Extractor,
) -> dict[int, Reused]:
    """For each of ``files`` (document id -> file) that has one, an earlier succeeded
    extraction of the same bytes by the same extractor for ``tenant``, without
    attachments (those would need their own copies). Two statements for all the files."""
    by_sha: dict[str, list[int]] = {}
    for doc_id, f in files.items():
        if f.sha256:
            by_sha.setdefault(f.sha256, []).append(doc_id)
    if not by_sha:
        return {}
    child = aliased(DocumentFile)
    rank = (
        func.row_number()
        .over(partition_by=DocumentFile.sha256, order_by=Result.id.desc())
        .label("rank")
    )
    candidates = (
        select(DocumentFile.sha256, Result.id, Result.document_id, Result.params, rank)
        .join(Result, Result.document_id == DocumentFile.document_id)
        .join(Job, Job.id == Result.job_id)
        .where(
            DocumentFile.sha256.in_(list(by_sha)),
            Result.task == EXTRACT,
            Result.status == ResultStatus.succeeded.value,
            Result.model_revision == extractor.revision,
            Job.tenant == tenant,
            Job.id != job_id,
            ~exists().where(child.parent_document_id == DocumentFile.document_id),
        )
        .subquery()
    )
    picked: dict[str, tuple[int, int]] = {}  # sha256 -> (result id, document id)
    for sha, result_id, doc_id, params, _rank in session.execute(
        select(candidates)
        .where(candidates.c.rank <= MAX_CANDIDATES)
        .order_by(candidates.c.sha256, candidates.c.rank)
    ):
        if sha not in picked and (params or {}) == extractor.params:
            picked[sha] = (int(result_id), int(doc_id))
    if not picked:
        return {}
    outputs = {
        int(rid): (dict(output or {}), source_job)
        for rid, output, source_job in session.execute(
            select(Result.id, Result.output, Result.job_id).where(
                Result.id.in_([rid for rid, _ in picked.values()])
            )
        )
    }
    found: dict[int, Reused] = {}
    for sha, (rid, source_doc) in picked.items():
        output, source_job = outputs[rid]
        output.setdefault("reused_from", source_job)
        for doc_id in by_sha[sha]:
            found[doc_id] = Reused(source_doc, dict(output))
    return found


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
        "reused": ex.reused_from is not None,
    }


def _text(ex: Extraction) -> tuple[str, str]:
    """(text, content_hash) of a file that became text ("" for one that did not)."""
    raw = ex.text_file.read_bytes() if ex.text_file is not None else b""
    if ex.status != ResultStatus.succeeded:
        raw = b""
    return raw.decode("utf-8"), hashlib.sha256(raw).hexdigest()


def _weight(ex: Extraction) -> int:
    size = 0
    for path in (ex.text_file, ex.original):
        if path is not None:
            size += path.stat().st_size
    return size


def _batches(items: list[Extraction]) -> Iterator[tuple[int, list[Extraction]]]:
    """(index of the first, items) in runs of at most BATCH_ROWS items or BATCH_BYTES."""
    start, size = 0, 0
    for i, ex in enumerate(items):
        weight = _weight(ex)
        if i > start and (i - start >= BATCH_ROWS or size + weight > BATCH_BYTES):
            yield start, items[start:i]
            start, size = i, 0
        size += weight
    if start < len(items):
        yield start, items[start:]


def _set_texts(session: Session, texts: dict[int, Extraction]) -> None:
    """The documents' texts from their spooled files, a batch per statement."""
    items = list(texts.items())
    for start, batch in _batches([ex for _, ex in items]):
        params = []
        for offset, ex in enumerate(batch):
            text, digest = _text(ex)
            params.append({"id": items[start + offset][0], "text": text, "content_hash": digest})
        session.execute(update(Document), params)


def _copy_texts(session: Session, sources: dict[int, int]) -> None:
    """Reused extractions: each document's text copied from the earlier one, in the
    database. (An earlier document deleted meanwhile gives NULL, which the column
    refuses: the write fails rather than keep an empty text.)"""
    if not sources:
        return
    docs = cast(Table, Document.__table__)
    src = docs.alias("src")
    source_of = src.c.id == bindparam("source")
    session.connection().execute(
        update(docs)
        .where(docs.c.id == bindparam("target"))
        .values(
            text=select(src.c.text).where(source_of).scalar_subquery(),
            content_hash=select(src.c.content_hash).where(source_of).scalar_subquery(),
        ),
        [{"target": target, "source": source} for target, source in sources.items()],
    )


def _unique_names(session: Session, job_id: str, names: list[str]) -> list[str]:
    """``names`` made unique within the job (``name``, ``name#2``, ...)."""
    wanted = sorted(set(names))
    taken: set[str] = set()
    for i in range(0, len(wanted), IN_CHUNK):
        taken.update(
            session.scalars(
                select(Document.custom_id).where(
                    Document.job_id == job_id, Document.custom_id.in_(wanted[i : i + IN_CHUNK])
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
    result rows (unit id filled in later). A batch of pieces costs four statements
    (documents, blobs, files, nothing per piece) plus a block per MiB of a big file."""
    # Past every unit's range (not only past the last document: an unpacked archive's row
    # is gone, and a new document in its old place would be counted by its old unit).
    top = session.scalar(select(func.max(Unit.seq_hi)).where(Unit.job_id == job.id))
    first = int(top if top is not None else -1) + 1
    names = _unique_names(session, job.id, [p.name for p in pieces])
    rows: list[dict[str, Any]] = []
    ids: list[int] = []
    for start, batch in _batches(pieces):
        documents = []
        for offset, piece in enumerate(batch, start=start):
            text, digest = _text(piece)
            documents.append(
                {
                    "job_id": job.id,
                    "seq": first + offset,
                    "custom_id": names[offset],
                    "text": text,
                    "meta": None,
                    "content_hash": digest,
                }
            )
        ids.extend(
            session.scalars(
                insert(Document).returning(Document.id, sort_by_parameter_order=True), documents
            )
        )
        del documents
        paths = [p.original for p in batch if p.original is not None]
        stored: Iterator[tuple[int | None, int, str]]
        if job.keep_originals is False:  # extracted already: their bytes are not kept
            stored = iter([(None, path.stat().st_size, _sha256(path)) for path in paths])
        else:
            stored = iter(originals.store_paths(session, job.tenant, paths))
        files = []
        for offset, piece in enumerate(batch, start=start):
            top_id, base = groups[offset]
            if piece.parent is None:
                parent = None
            elif piece.parent < 0:
                parent = top_id
            else:
                parent = ids[base + piece.parent]
            oid, size, sha = next(stored) if piece.original is not None else (None, 0, None)
            files.append(
                {
                    "document_id": ids[offset],
                    "job_id": job.id,
                    "name": names[offset],
                    "bytes": size,
                    "sha256": sha,
                    "blob_oid": oid,
                    "parent_document_id": parent,
                }
            )
            if piece.status == ResultStatus.succeeded:
                piece.output.update(custom_id=names[offset])
            rows.append(_result(job.id, ids[offset], 0, piece, extractor))
        session.execute(insert(DocumentFile), files)
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
    replaced = [doc_id for doc_id, ex in outcomes.items() if ex.replaced]
    if replaced:  # unpacked archives: their files take their place
        oids = session.scalars(
            select(DocumentFile.blob_oid).where(
                DocumentFile.document_id.in_(replaced), DocumentFile.blob_oid.is_not(None)
            )
        ).all()
        originals.release(session, list(oids))
        session.execute(delete(Document).where(Document.id.in_(replaced)))
    texts: dict[int, Extraction] = {}
    copies: dict[int, int] = {}
    for doc_id, ex in outcomes.items():
        if not ex.replaced:
            if ex.reused_from is not None:
                copies[doc_id] = ex.reused_from
            elif ex.status == ResultStatus.succeeded:
                texts[doc_id] = ex
            rows.append(_result(job.id, doc_id, unit.id, ex, extractor))
        groups.extend([(None if ex.replaced else doc_id, len(pieces))] * len(ex.children))
        pieces.extend(ex.children)
    _set_texts(session, texts)
    _copy_texts(session, copies)
    if job.keep_originals is False:  # the text is what they wanted: the bytes go now
        drop_originals(session, [*texts, *copies])
    ledger.write_results(session, rows)
    added, removed = len(pieces), len(replaced)
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def drop_originals(session: Session, document_ids: list[int]) -> int:
    """Release the stored bytes of these documents' files (their rows stay, with
    ``blob_oid`` NULL: name, size and sha256 remain); returns the blobs unlinked."""
    if not document_ids:
        return 0
    rows = session.execute(
        select(DocumentFile.document_id, DocumentFile.blob_oid).where(
            DocumentFile.document_id.in_(document_ids), DocumentFile.blob_oid.is_not(None)
        )
    ).all()
    if not rows:
        return 0
    session.execute(
        update(DocumentFile)
        .where(DocumentFile.document_id.in_([r.document_id for r in rows]))
        .values(blob_oid=None)
    )
    return originals.release(session, [r.blob_oid for r in rows])


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
