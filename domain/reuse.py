"""The result cache across jobs: reuse an earlier result instead of computing it again.

A document is looked up by its content hash. An earlier *succeeded* result of the
same tenant, task, model id, model revision and recorded parameters is copied into
the new job (``reused = true``, ``output.reused_from`` naming the job that computed
it), so the new job's counts add up as usual and nothing runs on the GPU for it.

It is called from ``ledger.claim_unit`` while the unit is being claimed, for jobs
created with ``reuse_results`` (the default for scheduled jobs). The worker passes
what identifies its results: anything with ``result_model(params, text)`` and
``describe_params(params)`` (every ``docbatch.worker.handlers.base.Handler`` is one). These are
the very functions the worker records on each result row, so what is looked up is what
was written, whatever model served the document (the extractive summarizer's MiniLM, a
translation model per detected language pair).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from docbatch.domain.result_rows import insert_results
from docbatch.schema.tables import Document, Job, Result, ResultStatus, utcnow

# Candidate rows fetched per content hash; enough for a year of nightly runs of one folder.
MAX_CANDIDATES_PER_DOCUMENT = 500


class HashedDocument(NamedTuple):
    """A document looked up by the hash of its text."""

    id: int
    content_hash: str
    text: str


class ResultIdentity(Protocol):
    """What made a result: the model that would compute it now and how it records params."""

    def result_model(self, params: dict[str, Any], text: str | None = None) -> tuple[str, str]:
        """(model id, revision) that makes the result of ``text`` with ``params``."""
        ...

    def describe_params(self, params: dict[str, Any]) -> dict[str, Any]: ...


def reuse_results(
    session: Session,
    *,
    job: Job,
    task: str,
    unit_id: int,
    keys: list[str] | None = None,
    params: dict[str, Any],
    identity: ResultIdentity,
    documents: list[HashedDocument],
) -> set[int]:
    """Copy matching earlier results for ``documents``; returns the ids of the documents
    that got one (and so need no computing).

    ``task`` is the job task's key (its deployment's name); ``keys`` the keys of every
    deployment of the same task (default: ``task`` alone). Results of all of them are
    candidates: the model id, revision and parameters decide, so a second deployment of
    the same model reuses what the first computed."""
    if not documents:
        return set()
    recorded = identity.describe_params(params)
    # Documents of one unit may be served by different models (translate: per language).
    by_model: dict[tuple[str, str], dict[str, list[int]]] = {}
    for doc_id, content_hash, text in documents:
        model = identity.result_model(params, text)
        by_model.setdefault(model, {}).setdefault(content_hash, []).append(doc_id)
    by_hash: dict[str, list[int]] = {}
    chosen: dict[str, int] = {}
    for (model_id, revision), hashes in by_model.items():
        for content_hash, ids in hashes.items():
            by_hash.setdefault(content_hash, []).extend(ids)
        # Newest first; parameters are compared here (JSON equality is not portable SQL).
        candidates = session.execute(
            select(Document.content_hash, Result.id, Result.params)
            .join(Result, Result.document_id == Document.id)
            .join(Job, Job.id == Result.job_id)
            .where(
                Document.content_hash.in_(list(hashes)),
                Result.task.in_(keys or [task]),
                Result.status == ResultStatus.succeeded.value,
                Result.model_id == model_id,
                Result.model_revision == revision,
                Job.tenant == job.tenant,
                Job.id != job.id,
            )
            .order_by(Result.id.desc())
            .limit(MAX_CANDIDATES_PER_DOCUMENT * len(hashes))
        ).all()
        for content_hash, result_id, result_params in candidates:
            if content_hash not in chosen and (result_params or {}) == recorded:
                chosen[content_hash] = result_id
    if not chosen:
        return set()
    sources = {
        r.id: r for r in session.scalars(select(Result).where(Result.id.in_(chosen.values())))
    }
    now = utcnow()
    rows = []
    reused: set[int] = set()
    for content_hash, result_id in chosen.items():
        src = sources[result_id]
        output = dict(src.output or {})
        # Point at the job that computed it, even when src was itself a copy.
        output.setdefault("reused_from", src.job_id)
        for doc_id in by_hash[content_hash]:
            rows.append(
                {
                    "job_id": job.id,
                    "document_id": doc_id,
                    "unit_id": unit_id,
                    "task": task,
                    "status": ResultStatus.succeeded.value,
                    "output": output,
                    "vectors": src.vectors,
                    "model_id": src.model_id,
                    "model_revision": src.model_revision,
                    "params": src.params,
                    "created_at": now,
                    "reused": True,
                }
            )
            reused.add(doc_id)
    insert_results(session, rows)
    return reused
