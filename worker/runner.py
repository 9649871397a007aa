"""Run one work unit: claim, chunk, batch, predict, reduce, write. No Celery in here.

``run_unit`` runs one unit with no lease (the Celery task's way on SQLite; the tests
and benchmarks call it directly); worker/pipeline.py runs the same steps under a lease.
The whole unit's results and its state change are written in one transaction, so a
crash at any point leaves either nothing or everything.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from docbatch.domain import ledger
from docbatch.schema.db import transaction
from docbatch.schema.errors import PermanentError
from docbatch.schema.settings import Settings
from docbatch.schema.tables import EXTRACT, JobStatus, Result, ResultStatus, Unit, UnitState, utcnow
from docbatch.worker import metrics, threads
from docbatch.worker.batching import plan_batches
from docbatch.worker.chunking import Chunk, chunk_text, token_ends_many
from docbatch.worker.handlers.base import GROUP_PARAM, Handler, Output, UnitDocument
from docbatch.worker.pages import PageMap, annotate

log = logging.getLogger("docbatch.worker")
CANCEL_CHECK_SECONDS = 0.5
MIN_BUDGET = 256


class Outcome(StrEnum):
    """What happened to a unit a worker was handed."""

    done = "done"  # results written, unit closed done
    cancelled = "cancelled"  # the job was cancelled: closed cancelled
    skipped = "skipped"  # closed already, or running on another live worker
    misrouted = "misrouted"  # another task's unit: failed with the reason
    superseded = "superseded"  # another delivery closed it first: nothing written


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class UnitOutcome:
    """What computing a unit produced, before it is written."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    cancelled: bool = False
    chunks: int = 0
    tokens: int = 0


def _is_oom(exc: BaseException) -> bool:
    # torch's own type when torch is loaded (no torch, no torch OOM); other backends
    # (ctranslate2, a CPU allocator) only say so in the message.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    return "out of memory" in str(exc).lower()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermanentError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class BatchRunner:
    """Feeds a handler token-budget batches; splits on OOM and isolates failing chunks."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.budget = handler.batch_budget

    def run(
        self,
        texts: list[str],
        lengths: list[int],
        params: dict[str, Any],
        should_stop: Callable[[], bool],
        groups: list[str] | None = None,
    ) -> tuple[list[Any], dict[int, str], bool]:
        """Outputs per text (None where failed), failures {index: reason}, stopped early.

        With ``groups``, each group's texts are batched apart and ``predict`` gets the
        group as ``params[GROUP_PARAM]``.
        """
        outputs: list[Any] = [None] * len(texts)
        failures: dict[int, str] = {}
        members: dict[str, list[int]] = {}
        for i, g in enumerate(groups or [""] * len(texts)):
            members.setdefault(g, []).append(i)
        for group, idx in members.items():
            gparams = {**params, GROUP_PARAM: group} if group else params
            batches = plan_batches(
                [lengths[i] for i in idx],
                self.budget,
                self.handler.config.max_batch_rows,
                self.handler.batch_cost(gparams),
            )
            for batch in batches:
                if should_stop():
                    return outputs, failures, True
                threads.rebalance()
                self._run_one([idx[j] for j in batch], texts, lengths, gparams, outputs, failures)
        return outputs, failures, False

    def _run_one(
        self,
        batch: list[int],
        texts: list[str],
        lengths: list[int],
        params: dict[str, Any],
        outputs: list[Any],
        failures: dict[int, str],
    ) -> None:
        try:
            with metrics.timed_batch(self.handler.task, [lengths[i] for i in batch]):
                result = self.handler.run_batch([texts[i] for i in batch], params)
        except Exception as exc:
            if _is_oom(exc):
                _free_device_memory()
                self.budget = max(MIN_BUDGET, self.budget // 2)
                log.warning(
                    "out of memory on %d rows; budget now %d tokens", len(batch), self.budget
                )
                if len(batch) == 1:
                    failures[batch[0]] = f"out of memory on a single chunk: {exc}"
                    return
            elif len(batch) == 1:
                failures[batch[0]] = _reason(exc)
                return
            # Split to isolate the failing rows (or to fit memory) and go on.
            half = len(batch) // 2
            for part in (batch[:half], batch[half:]):
                self._run_one(part, texts, lengths, params, outputs, failures)
            return
        for i, out in zip(batch, result, strict=True):
            outputs[i] = out


def _free_device_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort
        pass


@dataclass
class PreparedUnit:
    """A claimed unit: its documents, then (``prepare``) its chunks, ready for the model."""

    job_id: str
    unit_id: int
    documents: list[tuple[int, str, str]]
    params: dict[str, Any]
    # Units split off this one when it was claimed: publish them after the claim commits.
    split_off: list[tuple[int, str]] = field(default_factory=list)
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
    # The same function result reuse matches on (schema/reuse.py).
    model_id, revision = handler.result_model(prep.params, text)
    return {
        "job_id": prep.job_id,
        "document_id": doc_id,
        "unit_id": prep.unit_id,
        "task": handler.task,
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


def prepare_unit(
    handler: Handler,
    documents: list[tuple[int, str, str]],
    params: dict[str, Any],
    *,
    job_id: str,
    unit_id: int,
) -> PreparedUnit:
    """Check params and chunk every document: the CPU work before the model."""
    return prepare(
        handler, PreparedUnit(job_id=job_id, unit_id=unit_id, documents=documents, params=params)
    )


def prepare(handler: Handler, prep: PreparedUnit) -> PreparedUnit:
    """Fill in a claimed unit's chunks (in place; returns it)."""
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
                handler,
                prep,
                recorded,
                now,
                d[0],
                ResultStatus.failed,
                error=str(exc),
                text=d[2],
            )
            for d in documents
        ]
        prep.params_failed = True
        return prep
    chunked = _chunk_all(handler, [d[2] for d in documents], params)
    for pos, ((doc_id, _cid, text), chunks) in enumerate(zip(documents, chunked, strict=True)):
        if isinstance(chunks, BaseException):
            prep.rows.append(
                _result_row(
                    handler,
                    prep,
                    recorded,
                    now,
                    doc_id,
                    ResultStatus.failed,
                    error=_reason(chunks),
                    text=text,
                )
            )
            continue
        prep.doc_chunks[pos] = chunks
        prep.flat.extend((pos, k) for k in range(len(chunks)))
    prep.texts = [prep.doc_chunks[p][k].text for p, k in prep.flat]
    prep.lengths = [prep.doc_chunks[p][k].tokens for p, k in prep.flat]
    prep.groups = [prep.doc_chunks[p][k].group for p, k in prep.flat]
    return prep


def run_prepared(
    handler: Handler,
    prep: PreparedUnit,
    should_stop: Callable[[], bool],
    batch_runner: BatchRunner | None = None,
) -> UnitOutcome:
    """Run the model over a prepared unit's chunks and reduce per document (counted busy
    in the host's core share meanwhile, worker/threads.py)."""
    with threads.busy():
        return _run_model(handler, prep, should_stop, batch_runner)


def _run_model(
    handler: Handler,
    prep: PreparedUnit,
    should_stop: Callable[[], bool],
    batch_runner: BatchRunner | None,
) -> UnitOutcome:
    outcome = UnitOutcome(rows=list(prep.rows))
    if prep.params_failed:
        return outcome
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
    outcome.cancelled = stopped

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
            outcome.rows.append(row(doc_id, text, ResultStatus.failed, error=failed_docs[p]))
            continue
        if any(o is None for o in per_doc[p]):
            continue  # stopped for cancellation before this document finished
        try:
            out = handler.reduce(text, chunks, per_doc[p], params)
            if doc_id in prep.page_maps:
                annotate(out.data, prep.page_maps[doc_id])
        except Exception as exc:
            outcome.rows.append(row(doc_id, text, ResultStatus.failed, error=_reason(exc)))
            continue
        outcome.rows.append(row(doc_id, text, ResultStatus.succeeded, out))
        outcome.chunks += len(chunks)
        outcome.tokens += sum(c.tokens for c in chunks)
    return outcome


def _prepare_reduce(
    handler: Handler, prep: PreparedUnit, per_doc: dict[int, list[Any]], failed: dict[int, str]
) -> None:
    """The handler's unit-wide second pass over the documents about to be reduced."""
    docs = [
        UnitDocument(prep.documents[p][2], chunks, per_doc[p])
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
    documents: list[tuple[int, str, str]],
    params: dict[str, Any],
    should_stop: Callable[[], bool],
    *,
    job_id: str,
    unit_id: int,
    batch_runner: BatchRunner | None = None,
) -> UnitOutcome:
    """Chunk every document, run all chunks in length-sorted batches, reduce per document."""
    prep = prepare_unit(handler, documents, params, job_id=job_id, unit_id=unit_id)
    return run_prepared(handler, prep, should_stop, batch_runner)


def cancel_watcher(job_id: str) -> Callable[[], bool]:
    # Check at the first batch too: a unit claimed ahead may have waited while the job
    # was cancelled.
    last = [0.0, False]

    def should_stop() -> bool:
        now = time.monotonic()
        if now - last[0] >= CANCEL_CHECK_SECONDS:
            last[0] = now
            with transaction() as s:
                status = ledger.job_status(s, job_id)
            last[1] = status in (JobStatus.cancelling.value, JobStatus.cancelled.value)
        return bool(last[1])

    return should_stop


def claim_in(
    session: Session, unit_id: int, handler: Handler, settings: Settings
) -> PreparedUnit | Outcome:
    """Claim ``unit_id`` in ``session``'s transaction; its documents (not yet chunked) or
    what happened instead (skipped, misrouted). Documents whose result can be reused
    from an earlier job (same content, task, model and parameters) are filled in here.
    The caller publishes ``split_off`` once the transaction commits."""
    claim = ledger.claim_unit(
        session, unit_id, worker_name(), settings.max_unit_attempts, reuse=handler
    )
    if claim is None:
        return Outcome.skipped
    if claim.unit.task != handler.task:
        ledger.close_unit(
            session,
            claim.unit,
            UnitState.failed,
            reason=f"unit for task {claim.unit.task!r} reached a {handler.task!r} worker",
        )
        ledger.finalize_job_if_done(session, claim.job)
        return Outcome.misrouted
    return PreparedUnit(
        job_id=claim.job.id,
        unit_id=unit_id,
        documents=claim.documents,
        params=claim.params,
        split_off=claim.split_off,
        page_maps=_page_maps(session, [d[0] for d in claim.documents]),
    )


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


def publish_split(claimed: PreparedUnit | Outcome) -> None:
    """Send the messages of units split off at a (committed) claim. If this fails the
    reconciler finds them: they are queued in Postgres already."""
    if isinstance(claimed, PreparedUnit) and claimed.split_off:
        from docbatch.domain.publish import republish

        try:
            republish(u for u, _ in claimed.split_off)
        except Exception:  # the reconciler republishes queued units
            log.exception("could not publish units %s", claimed.split_off)


def write_outcome(handler: Handler, job_id: str, unit_id: int, outcome: UnitOutcome) -> Outcome:
    """Results and the unit's terminal state, in one transaction.

    If another delivery of the same unit closed it first, nothing is written
    (superseded). A result the database refuses (say, a NaN in a JSON output) fails that
    document with the reason instead of the unit.
    """
    try:
        return _write_outcome(handler, job_id, unit_id, outcome, isolate=False)
    except (DataError, IntegrityError):
        log.warning("unit %s: a result was refused; writing its results one by one", unit_id)
        return _write_outcome(handler, job_id, unit_id, outcome, isolate=True)


def _write_rows_one_by_one(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    for row in rows:
        try:
            with session.begin_nested():
                ledger.write_results(session, [row])
            kept.append(row)
        except (DataError, IntegrityError) as exc:
            reason = f"the result could not be stored: {type(exc.orig).__name__}: {exc.orig}"
            failed = {**row, "status": ResultStatus.failed.value, "output": None}
            failed.update(vectors=None, error=reason[:2000])
            with session.begin_nested():
                ledger.write_results(session, [failed])
            kept.append(failed)
    return kept


def _write_outcome(
    handler: Handler, job_id: str, unit_id: int, outcome: UnitOutcome, *, isolate: bool
) -> Outcome:
    with transaction() as s:
        job = ledger.lock_job(s, job_id)
        unit = s.get(Unit, unit_id)
        if unit is None or unit.state != UnitState.running.value:
            return Outcome.superseded
        rows = outcome.rows
        if isolate:
            rows = _write_rows_one_by_one(s, rows)
        else:
            ledger.write_results(s, rows)
        state = UnitState.cancelled if outcome.cancelled else UnitState.done
        ledger.close_unit(
            s,
            unit,
            state,
            reason="job cancelled" if outcome.cancelled else None,
            chunks=outcome.chunks,
            tokens=outcome.tokens,
        )
        ledger.finalize_job_if_done(s, job)
    metrics.unit_written(handler, state.value, rows, outcome.chunks, outcome.tokens)
    return Outcome(state.value)


def run_unit(
    unit_id: int, handler: Handler, settings: Settings, batch_runner: BatchRunner | None = None
) -> Outcome:
    """Process one unit end to end, no overlap and no lease (SQLite, where one worker runs
    everything); returns what happened (for logs and tests).

    On Postgres the worker uses worker/pipeline.py, which does the same steps under a lease.
    """
    with transaction() as s:
        claimed = claim_in(s, unit_id, handler, settings)
    publish_split(claimed)
    if isinstance(claimed, Outcome):
        return claimed
    outcome = run_prepared(
        handler, prepare(handler, claimed), cancel_watcher(claimed.job_id), batch_runner
    )
    return write_outcome(handler, claimed.job_id, unit_id, outcome)
