"""Stored data: ``docbatch gc`` and ``docbatch tenants set-retention``, the operator's
commands, straight against the database.

docbatch gc
docbatch tenants set-retention acme --days 30 --keep-originals no
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from docbatch.commands.common import command


def cmd_gc(args: argparse.Namespace) -> int:
    from docbatch.schema.settings import get_settings
    from docbatch.worker.lifecycle import lifecycle_pass

    report = lifecycle_pass(get_settings(), inline=True)
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    from docbatch.commands.common import client

    print(json.dumps(client(args).storage_usage(), indent=2))
    return 0


def _yes_no(value: str) -> bool:
    if value.lower() in ("yes", "true", "1"):
        return True
    if value.lower() in ("no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {value!r}")


def cmd_set_retention(args: argparse.Namespace) -> int:
    from docbatch.domain.tenants import set_storage_policy, storage_policy
    from docbatch.schema.db import transaction
    from docbatch.schema.settings import get_settings

    settings = get_settings()
    with transaction(settings) as s:
        set_storage_policy(s, args.tenant, args.days, args.keep_originals)
        policy = storage_policy(s, args.tenant, settings)
    print(
        json.dumps(
            {
                "tenant": args.tenant,
                "retention_days": policy.retention_days,
                "keep_originals": policy.keep_originals,
            }
        )
    )
    return 0


def register(sub: Any) -> None:
    sp = command(
        sub,
        "gc",
        "finish interrupted deletes and remove orphaned blobs and rows; prints what it "
        "removed (the beat runs the same pass every DOCBATCH_LIFECYCLE_INTERVAL_SECONDS)",
        ["docbatch gc"],
        client=False,
    )
    sp.set_defaults(func=cmd_gc)

    sp = command(
        sub,
        "tenants",
        "a tenant's data lifecycle settings, fair-share weight and quotas",
        ["docbatch tenants set-retention acme --days 30 --keep-originals no"],
        client=False,
    )
    tsub = sp.add_subparsers(dest="tenants_command", required=True, metavar="COMMAND")
    tp = command(
        tsub,
        "set-retention",
        "how long the tenant's finished jobs are kept (overrides DOCBATCH_RETENTION_DAYS; "
        "a job may ask for less, never more) and whether its files' original bytes are "
        "kept after extraction by default",
        [
            "docbatch tenants set-retention acme --days 30",
            "docbatch tenants set-retention acme --days 0 --keep-originals no",
        ],
        client=False,
    )
    tp.add_argument("tenant", help="the tenant, e.g. acme")
    tp.add_argument("--days", type=int, help="days after a job ends; 0 keeps jobs forever")
    tp.add_argument(
        "--keep-originals",
        type=_yes_no,
        metavar="yes|no",
        help="the default of a job's keep_originals",
    )
    tp.set_defaults(func=cmd_set_retention)
    from docbatch.commands import tenants

    tenants.register(tsub)
