"""Stored data (issue 21): ``docbatch gc``, ``docbatch usage``, ``docbatch tenants
set-retention``. They go straight to the database (the operator's commands).

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
