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
        with transaction(settings) as s:
            new = create_key(s, args.tenant)
        print(new.key)
        print(
            f"key {new.key_id} for tenant {new.tenant!r}: store it now, it is not shown again",
            file=sys.stderr,
        )
        return 0
    if args.keys_command == "webhook-secret":
        with transaction(settings) as s:
            secret = ensure_tenant(s, args.tenant).webhook_secret
        print(secret)
        return 0
    if args.keys_command == "revoke":
        try:
            with transaction(settings) as s:
                row = revoke_key(s, args.key)
                key_id, tenant = row.key_id, row.tenant
        except NotFound as exc:
            print(f"docbatch: {exc}", file=sys.stderr)
            return 1
        print(f"revoked key {key_id} of tenant {tenant!r}", file=sys.stderr)
        return 0
    with new_session(settings) as s:
        rows = [
            _row(row.key_id, row.tenant, row.created_at.isoformat(), row.revoked_at)
            for row in list_keys(s, args.tenant)
        ]
    _emit(rows, args)
    return 0


def _row(key_id: str, tenant: str, created_at: str, revoked_at: object) -> dict[str, object]:
    revoked = revoked_at.isoformat() if hasattr(revoked_at, "isoformat") else revoked_at
    return {
        "id": key_id,
        "tenant": tenant,
        "created_at": created_at,
        "revoked_at": revoked,
        "state": f"revoked {str(revoked)[:16].replace('T', ' ')}" if revoked else "active",
    }


def _emit(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    from docbatch.output import emit

    emit(rows, getattr(args, "format", "table"), columns=["id", "tenant", "created_at", "state"])


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
    rows = [
        _row(row["id"], row["tenant"], row["created_at"], row["revoked_at"])
        for row in client.keys(args.tenant)["data"]
    ]
    _emit(rows, args)
    return 0
