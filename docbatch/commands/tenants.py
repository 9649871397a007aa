"""``docbatch tenants set-weight|set-limits|show``: a tenant's share of the fleet and its
quotas, straight against the database (docs/concepts/fair-share.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from docbatch.commands.common import command

LIMITS = (
    "max_queued_documents",
    "max_queued_tokens",
    "max_documents_per_day",
    "max_concurrent_units",
)


def _limit(raw: str) -> int | str:
    if raw == "default":
        return raw
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"a limit is a number >= 0 or 'default', not {raw!r}")
    return value


def _weight(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a weight is a number > 0, not {raw!r}")
    return value


def cmd_tenant(args: argparse.Namespace) -> int:
    from docbatch.domain import quotas
    from docbatch.domain.tenants import ensure_tenant
    from docbatch.schema.db import transaction
    from docbatch.schema.settings import get_settings

    settings = get_settings()
    with transaction(settings) as s:
        tenant = ensure_tenant(s, args.tenant)
        if args.tenants_command == "set-weight":
            tenant.weight = args.weight
        elif args.tenants_command == "set-limits":
            for name in LIMITS:
                if (raw := getattr(args, name)) is not None:
                    setattr(tenant, name, raw if raw != "default" else None)
        s.flush()
        shown = {
            "tenant": tenant.name,
            "weight": tenant.weight,
            "limits": quotas.limits_of(s, tenant.name, settings).as_dict(),
            "in_use": quotas.usage_of(s, tenant.name).as_dict(),
        }
    print(json.dumps(shown, indent=2))
    return 0


def register(tsub: Any) -> None:
    """Add set-weight, set-limits and show under ``docbatch tenants``."""
    tp = command(
        tsub,
        "set-weight",
        "the tenant's share of each queue's workers while tenants compete (default 1)",
        ["docbatch tenants set-weight acme 3"],
        client=False,
    )
    tp.add_argument("tenant", help="the tenant, e.g. acme")
    tp.add_argument("weight", type=_weight, help="a number > 0")
    tp.set_defaults(func=cmd_tenant)
    tp = command(
        tsub,
        "set-limits",
        "the tenant's quotas: N (0: no limit) or 'default' (the DOCBATCH_TENANT_MAX_* setting)",
        ["docbatch tenants set-limits acme --max-queued-tokens 5000000 --max-documents-per-day 0"],
        client=False,
    )
    tp.add_argument("tenant", help="the tenant, e.g. acme")
    for name in LIMITS:
        setting = "DOCBATCH_TENANT_" + name.upper()
        tp.add_argument(
            "--" + name.replace("_", "-"),
            type=_limit,
            metavar="N|default",
            help=f"{name.replace('_', ' ')}: N, 0 for no limit, or default ({setting})",
        )
    tp.set_defaults(func=cmd_tenant)
    tp = command(
        tsub,
        "show",
        "the tenant's weight, the quotas in force and what it has in use",
        ["docbatch tenants show acme"],
        client=False,
    )
    tp.add_argument("tenant", help="the tenant, e.g. acme")
    tp.set_defaults(func=cmd_tenant)
