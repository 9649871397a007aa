"""Usage accounting: what each finished unit used, per tenant, task (deployment) and model.

``record`` is the one writer. It runs in the transaction that closes a unit (the
runner's write-and-close), keyed by the unit id with insert-on-conflict-do-nothing, so a
unit run twice (a redelivery, a worker killed mid-unit and the unit run again) is
counted once: a run whose transaction never committed left no row, and the close is
guarded so only one run closes. Documents whose result was reused from an earlier job
are counted as ``reused_documents``, not as documents the model computed.

``summary`` reads it back for ``GET /v1/usage`` and ``docbatch usage``, grouped by day,
task or model.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import BigInteger, DateTime, Float, Integer, String, cast, func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from docbatch.schema.db import insert_ignore
from docbatch.schema.tables import Job, Result, ResultStatus, Unit, Usage, utcnow

GroupBy = Literal["day", "task", "model"]
FIELDS = (
    "units",
    "documents",
    "reused_documents",
    "input_tokens",
    "generated_tokens",
    "chunks",
    "model_seconds",
    "extract_files",
    "extract_pages",
)


@dataclass
class Tally:
    """What the worker measured while computing the unit."""

    model: str = ""
    input_tokens: int = 0
    generated_tokens: int = 0
    chunks: int = 0
    model_seconds: float = 0.0
    extract_files: int = 0
    extract_pages: int = 0


def record(session: Session, unit: Unit, job: Job, tally: Tally) -> tuple[int, int]:
    """Write the closed ``unit``'s usage row (once per unit id, whatever runs it again);
    returns (documents computed, documents reused) by this row, (0, 0) if the unit's row
    was there already. One statement: the row is made from the count of its results."""
    computed = func.count().filter(Result.reused.is_(False))
    reused = func.count().filter(Result.reused.is_(True))
    row: dict[str, ColumnElement[Any]] = {
        "unit_id": literal(unit.id, BigInteger),
        "tenant": literal(job.tenant, String),
        "job_id": literal(job.id, String),
        "task": literal(unit.task, String),
        "queue": literal(unit.queue, String),
        "model": literal(tally.model, String),
        "state": literal(unit.state, String),
        "documents": computed,
        "reused_documents": reused,
        "input_tokens": literal(tally.input_tokens, BigInteger),
        "generated_tokens": literal(tally.generated_tokens, BigInteger),
        "chunks": literal(tally.chunks, BigInteger),
        "model_seconds": literal(round(tally.model_seconds, 6), Float),
        "extract_files": literal(tally.extract_files, Integer),
        "extract_pages": literal(tally.extract_pages, Integer),
        "finished_at": literal(utcnow(), DateTime(timezone=True)),
    }
    counted = select(*row.values()).where(
        Result.unit_id == unit.id, Result.status != ResultStatus.cancelled.value
    )
    written = session.execute(
        insert_ignore(session, Usage)
        .from_select(list(row), counted)
        .returning(Usage.documents, Usage.reused_documents)
    ).first()
    if written is None:
        return 0, 0
    return int(written[0] or 0), int(written[1] or 0)


def summary(
    session: Session,
    *,
    tenant: str | None,
    start: dt.datetime,
    end: dt.datetime,
    group_by: GroupBy,
) -> list[dict[str, Any]]:
    """Usage between ``start`` and ``end`` (finished_at), per tenant and ``group_by``;
    ``tenant`` None: every tenant."""
    if group_by == "day":
        key: Any = func.date(Usage.finished_at)
    elif group_by == "task":
        key = Usage.task
    else:
        key = Usage.model
    query = (
        select(
            Usage.tenant,
            key.label("key"),
            func.count(),
            func.sum(Usage.documents),
            func.sum(Usage.reused_documents),
            func.sum(Usage.input_tokens),
            func.sum(Usage.generated_tokens),
            func.sum(Usage.chunks),
            func.sum(Usage.model_seconds),
            func.sum(cast(Usage.extract_files, Integer)),
            func.sum(cast(Usage.extract_pages, Integer)),
        )
        .where(Usage.finished_at >= start, Usage.finished_at < end)
        .group_by(Usage.tenant, key)
        .order_by(Usage.tenant, key)
    )
    if tenant is not None:
        query = query.where(Usage.tenant == tenant)
    out = []
    for row in session.execute(query).all():
        values = [float(v or 0) if i == 6 else int(v or 0) for i, v in enumerate(row[2:])]
        entry: dict[str, Any] = {"tenant": row[0], group_by: str(row[1])}
        entry.update(zip(FIELDS, values, strict=True))
        entry["model_seconds"] = round(entry["model_seconds"], 3)
        out.append(entry)
    return out
