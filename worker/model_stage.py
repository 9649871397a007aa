"""The model stage: a task's handler over a unit's documents. No Celery in here.

``prepare`` chunks every document with the model's own tokenizer (the CPU work before the
model); ``compute`` runs all chunks of the unit in length-sorted token-budget batches
(docbatch.worker.batching) and reduces the outputs per document; ``ModelStage.write``
inserts one result row per document. The runner (docbatch.worker.runner) does the rest:
claim, heartbeat, time limit, closing the unit in the same transaction as the rows.

``compute_unit`` is the whole computation without a database (tests and benchmarks)::

    rows = compute_unit(handler, documents, {}, lambda: False, job_id="j", unit_id=1).rows
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from docbatch.domain import ledger
from docbatch.domain.ledger import Claim, ClaimedDocument
from docbatch.domain.retry import RetryPolicy, describe, is_transient
from docbatch.domain.reuse import ResultIdentity
from docbatch.schema.errors import PermanentError
from docbatch.schema.settings import Settings
from docbatch.schema.tables import EXTRACT, Job, Result, ResultStatus, Unit, utcnow
from docbatch.worker import metrics, threads
from docbatch.worker.batching import BatchRunner, reason_of
from docbatch.worker.chunking import Chunk, chunk_text, token_ends_many
from docbatch.worker.handlers.base import Handler, Output, UnitDocument
from docbatch.worker.pages import PageMap, annotate
from docbatch.worker.stage import Computed, ShouldStop, Verdict

log = logging.getLogger("docbatch.worker")


@dataclass
class ModelRows(Computed):
    """One result row per document the model computed (or failed), ready to insert."""

    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PreparedUnit:
    """A claimed unit: its documents, then (``prepare``) its chunks, ready for the model."""

    job_id: str
    unit_id: int
    documents: list[ClaimedDocument]
    params: dict[str, Any]
    prepared: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)  # failed before the model
    doc_chunks: dict[int, list[Chunk]] = field(default_factory=dict)
    flat: list[tuple[int, int]] = field(default_factory=list)  # (document pos, chunk pos)
    texts: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    params_failed: bool = False
    # Documents extracted from files: where their pages and sections start (worker/pages.py).
    page_maps: dict[int, PageMap] = field(default_factory=dict)


def _result_row(
    handler: Handler,
    prep: PreparedUnit,
    recorded: dict[str, Any],
    now: Any,
    doc_id: int,
    status: ResultStatus,
    output: Output | None = None,
    error: str | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    vectors = None
    if output is not None and output.vectors is not None:
        vectors = np.ascontiguousarray(output.vectors, dtype=np.float32).tobytes()
    # The same function result reuse matches on (docbatch.domain.reuse).
    model_id, revision = handler.result_model(prep.params, text)
    return {
        "job_id": prep.job_id,
        "document_id": doc_id,
        "unit_id": prep.unit_id,
        "task": handler.deployment,
        "status": status.value,
        "output": output.data if output else None,
        "vectors": vectors,
        "error": error,
        "model_id": model_id,
        "model_revision": revision,
        "params": recorded,
        "created_at": now,
    }


def _chunk_all(
    handler: Handler, texts: list[str], params: dict[str, Any]
) -> list[list[Chunk] | BaseException]:
    """Chunk every document; one tokenizer call for all of them when the handler uses
    the default chunker and a fast tokenizer (per-call overhead dominates short texts)."""
    ends: list[list[int]] | None = None
    if handler.default_chunker and len(texts) > 1:
        try:
            ends = token_ends_many(texts, handler.tokenizer)
        except Exception:  # fall back to one text at a time
            ends = None
    out: list[list[Chunk] | BaseException] = []
    for i, text in enumerate(texts):
        try:
            if ends is not None:
                out.append(chunk_text(text, handler.tokenizer, handler.max_input_tokens, ends[i]))
            else:
                out.append(handler.chunk_for(text, params))
        except Exception as exc:  # one bad document must not sink the unit
            out.append(exc)
    return out


def prepare(handler: Handler, prep: PreparedUnit) -> PreparedUnit:
    """Check params and chunk every document: the CPU work before the model (in place;
    returns it; a second call does nothing)."""
    if prep.prepared:
        return prep
    prep.prepared = True
    documents, params = prep.documents, prep.params
    recorded = handler.describe_params(params)
    now = utcnow()
    try:
        handler.check_params(params)
    except PermanentError as exc:
        prep.rows = [
            _result_row(
                handler, prep, recorded, now, d.id, ResultStatus.failed, error=str(exc), text=d.text
            )
            for d in documents
        ]
        prep.params_failed = True
        return prep
    chunked = _chunk_all(handler, [d.text for d in documents], params)
    for pos, (doc, chunks) in enumerate(zip(documents, chunked, strict=True)):
        if isinstance(chunks, BaseException):
            prep.rows.append(
                _result_row(
                    handler,
                    prep,
                    recorded,
                    now,
                    doc.id,
                    ResultStatus.failed,
                    error=reason_of(chunks),
                    text=doc.text,
                )
            )
            continue
        prep.doc_chunks[pos] = chunks
        prep.flat.extend((pos, k) for k in range(len(chunks)))
    prep.texts = [prep.doc_chunks[p][k].text for p, k in prep.flat]
    prep.lengths = [prep.doc_chunks[p][k].tokens for p, k in prep.flat]
    prep.groups = [prep.doc_chunks[p][k].group for p, k in prep.flat]
    return prep


def compute(
    handler: Handler,
    prep: PreparedUnit,
    should_stop: ShouldStop,
    batch_runner: BatchRunner | None = None,
) -> ModelRows:
    """Run the model over a prepared unit's chunks and reduce per document (counted busy
    in the host's core share meanwhile, worker/threads.py)."""
    with threads.busy():
        return _run_model(handler, prep, should_stop, batch_runner)


def _run_model(
    handler: Handler,
    prep: PreparedUnit,
    should_stop: ShouldStop,
    batch_runner: BatchRunner | None,
) -> ModelRows:
    computed = ModelRows(rows=list(prep.rows))
    if prep.params_failed:
        return computed
    params = prep.params
    recorded = handler.describe_params(params)
    now = utcnow()

    def row(
        doc_id: int,
        text: str,
        status: ResultStatus,
        output: Output | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        return _result_row(handler, prep, recorded, now, doc_id, status, output, error, text)

    doc_chunks, flat = prep.doc_chunks, prep.flat
    runner = batch_runner or BatchRunner(handler)
    outputs, failures, stopped = runner.run(
        prep.texts, prep.lengths, params, should_stop, prep.groups
    )
    computed.cancelled = stopped

    per_doc: dict[int, list[Any]] = {p: [None] * len(c) for p, c in doc_chunks.items()}
    failed_docs: dict[int, str] = {}
    for idx, (p, k) in enumerate(flat):
        per_doc[p][k] = outputs[idx]
        if idx in failures and p not in failed_docs:
            failed_docs[p] = (
                f"chunk {k} ({doc_chunks[p][k].start}:{doc_chunks[p][k].end}): {failures[idx]}"
            )
    _prepare_reduce(handler, prep, per_doc, failed_docs)
    for p, chunks in doc_chunks.items():
        doc_id, _cid, text = prep.documents[p]
        if p in failed_docs:
            computed.rows.append(row(doc_id, text, ResultStatus.failed, error=failed_docs[p]))
            continue
        if any(o is None for o in per_doc[p]):
            continue  # stopped for cancellation before this document finished
        try:
            out = handler.reduce(text, chunks, per_doc[p], params)
            if doc_id in prep.page_maps:
                annotate(out.data, prep.page_maps[doc_id])
        except Exception as exc:
            computed.rows.append(row(doc_id, text, ResultStatus.failed, error=reason_of(exc)))
            continue
        computed.rows.append(row(doc_id, text, ResultStatus.succeeded, out))
        computed.chunks += len(chunks)
        computed.tokens += sum(c.tokens for c in chunks)
        usage = out.data.get("usage") if isinstance(out.data, dict) else None
        if isinstance(usage, dict):  # generate: prompt and completion tokens per document
            computed.generated_tokens += int(usage.get("completion_tokens") or 0)
    computed.model = next((str(r["model_id"]) for r in computed.rows if r.get("model_id")), "")
    return computed


def _prepare_reduce(
    handler: Handler, prep: PreparedUnit, per_doc: dict[int, list[Any]], failed: dict[int, str]
) -> None:
    """The handler's unit-wide second pass over the documents about to be reduced."""
    docs = [
        UnitDocument(prep.documents[p].text, chunks, per_doc[p])
        for p, chunks in prep.doc_chunks.items()
        if p not in failed and all(o is not None for o in per_doc[p])
    ]
    if not docs:
        return
    try:
        handler.prepare_reduce(docs, prep.params)
    except Exception:  # reduce still runs per document and fails alone
        log.warning(
            "prepare_reduce failed for unit %s; reducing per document",
            prep.unit_id,
            exc_info=True,
        )


def compute_unit(
    handler: Handler,
    documents: list[ClaimedDocument] | list[tuple[int, str, str]],
    params: dict[str, Any],
    should_stop: ShouldStop,
    *,
    job_id: str,
    unit_id: int,
    batch_runner: BatchRunner | None = None,
) -> ModelRows:
    """Chunk every document, run all chunks in length-sorted batches, reduce per document
    (``documents``: (id, custom_id, text)); no database."""
    prep = PreparedUnit(
        job_id=job_id,
        unit_id=unit_id,
        documents=[ClaimedDocument(*d) for d in documents],
        params=params,
    )
    return compute(handler, prepare(handler, prep), should_stop, batch_runner)


def overlaps(handler: Handler, settings: Settings) -> bool:
    """Claim/chunk ahead and write results on threads beside the model? On a GPU the model
    waits on the device and the threads fill that time. On the CPU the model's threads
    already hold every core and the threads only take cores and the GIL from it: a
    Python-bound ``generate`` (small models) waits up to the GIL's switch interval each
    time it takes the GIL back. The figures: BENCHMARKS.md, "Measurements behind the code"
    (``bench.run --only task_paths``)."""
    if settings.worker_overlap != "auto":
        return settings.worker_overlap == "threads"
    return not handler.device.startswith("cpu")


def _page_maps(session: Session, document_ids: list[int]) -> dict[int, PageMap]:
    """Page and section maps of the documents that were extracted from files."""
    if not document_ids:
        return {}
    rows = session.execute(
        select(Result.document_id, Result.output).where(
            Result.document_id.in_(document_ids),
            Result.task == EXTRACT,
            Result.status == ResultStatus.succeeded.value,
        )
    ).all()
    return {int(d): m for d, out in rows if (m := PageMap.from_output(out)) is not None}


def _write_one_by_one(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row in a savepoint of its own: a row the database refuses (a NaN in a JSON
    output, a value of a type it cannot store, a server limit) becomes that document's
    failure with the reason."""
    kept: list[dict[str, Any]] = []
    for row in rows:
        try:
            with session.begin_nested():
                ledger.write_results(session, [row])
            kept.append(row)
        except Exception as exc:
            if is_transient(exc):
                raise
            failed = {**row, "status": ResultStatus.failed.value, "output": None}
            failed.update(vectors=None, error=f"the result could not be stored: {describe(exc)}")
            with session.begin_nested():
                ledger.write_results(session, [failed])
            kept.append(failed)
    return kept


class ModelStage:
    """A pinned model's handler as a stage of the runner (docbatch.worker.stage)."""

    def __init__(
        self, handler: Handler, settings: Settings, batch_runner: BatchRunner | None = None
    ) -> None:
        self.handler = handler
        # Units and results are keyed by the deployment (docbatch.schema.settings.Deployment).
        self.task: str = handler.deployment
        self.reuse: ResultIdentity | None = handler
        self.claim_ahead: bool = settings.worker_claim_ahead
        self.threaded: bool = overlaps(handler, settings)
        self.policy = RetryPolicy.of(settings)
        self.batch_runner = batch_runner or BatchRunner(handler)

    def load(self, session: Session, claim: Claim) -> PreparedUnit:
        return PreparedUnit(
            job_id=claim.job.id,
            unit_id=claim.unit.id,
            documents=claim.documents,
            params=claim.params,
            page_maps=_page_maps(session, [d.id for d in claim.documents]),
        )

    def prepare(self, work: PreparedUnit) -> None:
        prepare(self.handler, work)

    def time_limit(self, work: PreparedUnit) -> tuple[float, str] | None:
        tokens = sum(work.lengths)
        seconds = self.policy.time_limit(tokens)
        if seconds is None:
            return None
        return seconds, self.policy.time_limit_reason(tokens, seconds)

    def compute(self, work: PreparedUnit, should_stop: ShouldStop) -> ModelRows:
        return compute(self.handler, work, should_stop, self.batch_runner)

    def write(
        self, session: Session, unit: Unit, job: Job, computed: ModelRows, *, isolate: bool
    ) -> None:
        if isolate:
            computed.rows = _write_one_by_one(session, computed.rows)
        else:
            ledger.write_results(session, computed.rows)

    def finished(self, computed: ModelRows, verdict: Verdict | None) -> None:
        if verdict in (Verdict.done, Verdict.cancelled, Verdict.failed):
            metrics.unit_written(
                self.handler, verdict.value, computed.rows, computed.chunks, computed.tokens
            )
