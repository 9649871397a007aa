"""``docbatch usage``: what the tenant (the admin key: every tenant) used, from
``GET /v1/usage``, as a table or JSON (docbatch.domain.accounting); ``docbatch usage
storage``: what it stores (``GET /v1/usage/storage``, docbatch.domain.usage)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from docbatch.commands.common import client, command

COLUMNS = (
    ("units", "units"),
    ("documents", "docs"),
    ("reused_documents", "reused"),
    ("input_tokens", "in tokens"),
    ("generated_tokens", "gen tokens"),
    ("chunks", "chunks"),
    ("model_seconds", "model s"),
    ("extract_pages", "pages"),
)


def cmd_usage(args: argparse.Namespace) -> int:
    params = {"group_by": args.group_by}
    for name in ("start", "end", "tenant"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    with client(args) as api:
        body: dict[str, Any] = api.request("GET", "/v1/usage", params=params).json()
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    head = ["tenant", args.group_by] + [label for _, label in COLUMNS]
    rows = [
        [str(r["tenant"]), str(r[args.group_by])] + [f"{r[k]:,}" for k, _ in COLUMNS]
        for r in body["data"]
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    for line in [head, *rows]:
        print(
            "  ".join(
                x.ljust(w) if i < 2 else x.rjust(w)
                for i, (x, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    return 0


def register(sub: Any) -> None:
    sp = command(
        sub,
        "usage",
        "what your tenant used (documents, tokens, model seconds, pages) per day, task or "
        "model; with the admin key, every tenant",
        ["docbatch usage --group-by task --start 2026-12-01", "docbatch usage --json"],
    )
    sp.add_argument("--start", help="ISO date or date-time (UTC); default 30 days ago")
    sp.add_argument("--end", help="ISO date or date-time (UTC), exclusive; default now")
    sp.add_argument(
        "--group-by",
        choices=["day", "task", "model"],
        default="day",
        help="one row per day (default), per task or per model",
    )
    sp.add_argument("--tenant", help="admin key only: one tenant")
    sp.add_argument("--json", action="store_true", help="the api's JSON as is")
    sp.set_defaults(func=cmd_usage)
    usub = sp.add_subparsers(dest="usage_command", required=False, metavar="COMMAND")
    from docbatch.commands.data import cmd_usage as cmd_storage

    tp = command(
        usub,
        "storage",
        "what this tenant stores (documents, results, original and extracted bytes, OpenAI "
        "files) and what retention deletes next",
        ["docbatch usage storage"],
    )
    tp.set_defaults(func=cmd_storage)
