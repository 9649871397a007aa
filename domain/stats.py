"""Figures over time for the dashboard: documents finished per time bucket, per task."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from schema.tables import Result, ResultStatus


def throughput(session: Session, job_id: str, bucket_seconds: int = 10) -> list[dict[str, Any]]:
    """``[{"t": bucket start (ISO, UTC), "task", "documents", "reused"}]`` in time order.

    Counts results by their ``created_at`` (written when the worker computed the unit, or
    when a reused result was copied), cancelled ones excluded.
    """
    epoch: Any
    if session.get_bind().dialect.name == "postgresql":
        epoch = func.floor(func.extract("epoch", Result.created_at) / bucket_seconds)
    else:  # SQLite stores ISO text
        epoch = cast(func.strftime("%s", Result.created_at), Integer) / bucket_seconds
    bucket = cast(epoch, Integer).label("bucket")
    rows = session.execute(
        select(
            bucket,
            Result.task,
            func.count(),
            func.sum(cast(Result.reused, Integer)),
        )
        .where(Result.job_id == job_id, Result.status != ResultStatus.cancelled.value)
        .group_by(bucket, Result.task)
        .order_by(bucket, Result.task)
    ).all()
    return [
        {
            "t": dt.datetime.fromtimestamp(int(b) * bucket_seconds, dt.UTC).isoformat(),
            "task": task,
            "documents": int(n),
            "reused": int(r or 0),
        }
        for b, task, n, r in rows
    ]
