"""``docbatch keys create|revoke|list|webhook-secret``: API keys and the tenant's webhook
signing secret, straight against the database."""

from __future__ import annotations

import argparse
import sys

from docbatch.domain.tenants import create_key, ensure_tenant, list_keys, revoke_key
from docbatch.schema.db import new_session, transaction
from docbatch.schema.errors import NotFound


def run_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "create":
        with transaction() as s:
            new = create_key(s, args.tenant)
        print(new.key)
        print(
            f"key {new.key_id} for tenant {new.tenant!r}: store it now, it is not shown again",
            file=sys.stderr,
        )
        return 0
    if args.keys_command == "webhook-secret":
        with transaction() as s:
            secret = ensure_tenant(s, args.tenant).webhook_secret
        print(secret)
        return 0
    if args.keys_command == "revoke":
        try:
            with transaction() as s:
                row = revoke_key(s, args.key)
                key_id, tenant = row.key_id, row.tenant
        except NotFound as exc:
            print(f"docbatch: {exc}", file=sys.stderr)
            return 1
        print(f"revoked key {key_id} of tenant {tenant!r}", file=sys.stderr)
        return 0
    with new_session() as s:
        for row in list_keys(s, args.tenant):
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
            print(f"{row.key_id}\t{row.tenant}\t{row.created_at:%Y-%m-%d %H:%M}\t{state}")
    return 0
