"""Figures over time for the dashboard: documents finished per time bucket, per task."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from docbatch.schema.tables import Usage


def throughput(session: Session, job_id: str, bucket_seconds: int = 10) -> list[dict[str, Any]]:
    """``[{"t": bucket start (ISO, UTC), "task", "documents", "reused"}]`` in time order.

    Read from the job's usage rows (docbatch.domain.accounting: one per closed unit, its
    succeeded and failed results, the reused among them), bucketed by when the unit
    closed: a few thousand rows for a million-document job, where counting its results
    read every one of them on every refresh of the chart. Cancelled results are not in
    them.
    """
    epoch: Any
    if session.get_bind().dialect.name == "postgresql":
        epoch = func.floor(func.extract("epoch", Usage.finished_at) / bucket_seconds)
    else:  # SQLite stores ISO text
        epoch = cast(func.strftime("%s", Usage.finished_at), Integer) / bucket_seconds
    bucket = cast(epoch, Integer).label("bucket")
    rows = session.execute(
        select(
            bucket,
            Usage.task,
            func.sum(Usage.documents + Usage.reused_documents),
            func.sum(Usage.reused_documents),
        )
        .where(Usage.job_id == job_id)
        .group_by(bucket, Usage.task)
        .order_by(bucket, Usage.task)
    ).all()
    return [
        {
            "t": dt.datetime.fromtimestamp(int(b) * bucket_seconds, dt.UTC).isoformat(),
            "task": task,
            "documents": int(n or 0),
            "reused": int(r or 0),
        }
        for b, task, n, r in rows
        if n
    ]


def auto_window(bucket_seconds: int) -> int:
    """Seconds to average the rate over: several unit-sized bursts, at least 5 buckets."""
    return max(5 * bucket_seconds, 30)


def progress(
    data: list[dict[str, Any]], bucket_seconds: int, window_seconds: int
) -> list[dict[str, Any]]:
    """Cumulative progress and a smoothed rate from ``throughput``'s buckets.

    Results land in unit-sized bursts, so per-bucket counts form a comb (a bucket full,
    the next ones empty) that hides the real rate. Per task and bucket (the gaps between
    the first and last bucket filled): ``done``, documents finished by the bucket's end,
    and ``rate``, documents per second over the trailing ``window_seconds`` (shorter at
    the start, where less time has passed). ``[{"t", "task", "done", "rate"}]``.
    """
    if not data:
        return []
    starts = sorted({dt.datetime.fromisoformat(d["t"]) for d in data})
    step = dt.timedelta(seconds=bucket_seconds)
    n = int((starts[-1] - starts[0]) / step) + 1
    grid = [starts[0] + i * step for i in range(n)]
    window = max(1, round(window_seconds / bucket_seconds))
    per_task: dict[str, list[int]] = {}
    for d in data:
        i = int((dt.datetime.fromisoformat(d["t"]) - starts[0]) / step)
        per_task.setdefault(d["task"], [0] * n)[i] += int(d["documents"])
    out: list[dict[str, Any]] = []
    for task in sorted(per_task):
        done, cumulative = 0, []
        for count in per_task[task]:
            done += count
            cumulative.append(done)
        for i, t in enumerate(grid):
            back = min(window, i + 1)
            before = cumulative[i - back] if i - back >= 0 else 0
            rate = (cumulative[i] - before) / (back * bucket_seconds)
            out.append(
                {"t": t.isoformat(), "task": task, "done": cumulative[i], "rate": round(rate, 3)}
            )
    return out
