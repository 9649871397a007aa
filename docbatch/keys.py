"""``docbatch keys create|revoke|list|webhook-secret``: API keys and the tenant's webhook
signing secret.

With DOCBATCH_ADMIN_KEY set, create/list/revoke go through the api at DOCBATCH_API_URL
(``/v1/admin/keys``, audited there): no database access needed. Without it, or with
``--database``, they go straight to the database (as does ``webhook-secret``)."""

from __future__ import annotations

import argparse
import sys

from docbatch.domain.tenants import create_key, ensure_tenant, list_keys, revoke_key
from docbatch.schema.db import new_session, transaction
from docbatch.schema.errors import NotFound


def run_keys(args: argparse.Namespace) -> int:
    from docbatch.schema.settings import get_settings

    settings = get_settings()
    if (
        settings.admin_key
        and not getattr(args, "database", False)
        and args.keys_command != "webhook-secret"
    ):
        return _over_api(args, settings.api_url, settings.admin_key)
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


def _over_api(args: argparse.Namespace, api_url: str, admin_key: str) -> int:
    from docbatch.client import Client
    from docbatch.domain.tenants import key_id_of

    client = Client(api_url, admin_key)
    if args.keys_command == "create":
        new = client.create_key(args.tenant)
        print(new["key"])
        print(
            f"key {new['id']} for tenant {new['tenant']!r}: store it now, it is not shown again",
            file=sys.stderr,
        )
        return 0
    if args.keys_command == "revoke":
        row = client.revoke_key(key_id_of(args.key))
        print(f"revoked key {row['id']} of tenant {row['tenant']!r}", file=sys.stderr)
        return 0
    for row in client.keys(args.tenant)["data"]:
        created = row["created_at"][:16].replace("T", " ")
        state = (
            f"revoked {row['revoked_at'][:16].replace('T', ' ')}" if row["revoked_at"] else "active"
        )
        print(f"{row['id']}\t{row['tenant']}\t{created}\t{state}")
    return 0
