"""``docbatch keys create|revoke|list|webhook-secret``: through the api with
DOCBATCH_ADMIN_KEY, else straight against the database (``docbatch/keys.py``)."""

from __future__ import annotations

import argparse
from typing import Any

from docbatch.commands.common import command
from docbatch.output import add_format


def cmd_keys(args: argparse.Namespace) -> int:
    from docbatch.keys import run_keys

    return run_keys(args)


def register(sub: Any) -> None:
    sp = command(
        sub,
        "keys",
        "create, revoke and list API keys (through the api with DOCBATCH_ADMIN_KEY, else "
        "the database)",
        ["docbatch keys create --tenant acme", "docbatch keys list --tenant acme"],
        client=False,
    )
    sp.add_argument(
        "--database", action="store_true", help="go to the database even with an admin key"
    )
    keys = sp.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    kp = command(
        keys,
        "create",
        "create a key for a tenant; prints it once",
        ["docbatch keys create --tenant acme"],
        client=False,
    )
    kp.add_argument("--tenant", required=True, help="the tenant the key acts for, e.g. acme")
    kp = command(
        keys,
        "revoke",
        "revoke a key (the key itself or its id)",
        ["docbatch keys revoke key_3f2a9c"],
        client=False,
    )
    kp.add_argument("key", help="the key (dbk_...) or its id (from `docbatch keys list`)")
    kp = command(
        keys, "list", "list keys (ids only)", ["docbatch keys list --tenant acme"], client=False
    )
    kp.add_argument("--tenant", help="only this tenant's keys")
    add_format(kp)
    kp = command(
        keys,
        "webhook-secret",
        "print the secret that signs a tenant's webhooks",
        ["docbatch keys webhook-secret --tenant acme"],
        client=False,
    )
    kp.add_argument("--tenant", required=True, help="the tenant whose secret to print")
    sp.set_defaults(func=cmd_keys)
