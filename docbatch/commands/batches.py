"""``docbatch batches list|show``: the OpenAI-compatible batches (``/v1/batches``).

docbatch batches list ; docbatch batches show batch_123
"""

from __future__ import annotations

import argparse
from itertools import islice
from typing import Any

from docbatch import exitcodes
from docbatch.commands.common import client, command
from docbatch.output import add_format, emit

COLUMNS = ["id", "status", "endpoint", "model", "completed", "failed", "total", "created_at"]


def _row(batch: dict[str, Any]) -> dict[str, Any]:
    import datetime as dt

    counts = batch.get("request_counts") or {}
    created = batch.get("created_at")
    return {
        **batch,
        "model": (batch.get("metadata") or {}).get("model", ""),
        "completed": counts.get("completed"),
        "failed": counts.get("failed"),
        "total": counts.get("total"),
        "created_at": dt.datetime.fromtimestamp(created, dt.UTC).isoformat()
        if isinstance(created, int | float)
        else created,
    }


def cmd_list(args: argparse.Namespace) -> int:
    batches = islice(client(args).batches(limit=min(args.limit, 100)), args.limit)
    rows = [_row(b) for b in batches]
    if args.format == "table":
        emit(rows, "table", columns=COLUMNS)
    else:
        emit([dict(b) for b in rows], args.format)
    return exitcodes.OK


def cmd_show(args: argparse.Namespace) -> int:
    emit(client(args).batch(args.batch), args.format)
    return exitcodes.OK


def register(sub: Any) -> None:
    sp = command(
        sub,
        "batches",
        "OpenAI-compatible batches (/v1/batches): list, show",
        ["docbatch batches list", "docbatch batches show batch_123 --format json"],
    )
    bsub = sp.add_subparsers(dest="batches_command", required=True, metavar="COMMAND")
    lp = command(
        bsub, "list", "batches, newest first", ["docbatch batches list --limit 50 --format jsonl"]
    )
    lp.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    add_format(lp)
    lp.set_defaults(func=cmd_list)
    show = command(
        bsub,
        "show",
        "one batch as the OpenAI API returns it (status, request_counts, file ids)",
        ["docbatch batches show batch_123"],
    )
    show.add_argument("batch", metavar="BATCH", help="a batch id (batch_...)")
    add_format(show)
    show.set_defaults(func=cmd_show)
