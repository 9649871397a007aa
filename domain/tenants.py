"""Tenants and API keys: creating, revoking and checking keys.

A key reads ``dbk_<key_id>_<secret>``. Only ``sha256(key)`` is stored, looked up by
``key_id``; the key itself is shown once, when it is created. Example::

    with transaction(settings) as s:
        key = create_key(s, "acme")        # prints nowhere; the caller shows it once
    with new_session(settings) as s:
        tenant = authenticate(s, key.key)  # "acme", or raises Unauthorized
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from docbatch.schema.errors import InputError, NotFound, Unauthorized
from docbatch.schema.settings import Settings
from docbatch.schema.tables import AdminAudit, ApiKey, Tenant, utcnow

log = logging.getLogger("docbatch.audit")

KEY_PREFIX = "dbk_"
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEY = re.compile(r"^dbk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")


@dataclass
class NewKey:
    key_id: str
    tenant: str
    key: str  # the whole secret key: shown once, never stored


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def ensure_tenant(session: Session, name: str) -> Tenant:
    if not TENANT_NAME.match(name):
        raise InputError(
            "tenant", "must be 1-64 letters, digits, '_', '.' or '-', starting alphanumeric"
        )
    tenant = session.get(Tenant, name)
    if tenant is None:
        tenant = Tenant(name=name, webhook_secret=secrets.token_urlsafe(32), created_at=utcnow())
        session.add(tenant)
        session.flush()
    return tenant


def create_key(session: Session, tenant: str) -> NewKey:
    """A new key for ``tenant`` (created if new)."""
    ensure_tenant(session, tenant)
    key_id = secrets.token_hex(8)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(key_id=key_id, tenant=tenant, key_hash=hash_key(key), created_at=utcnow()))
    session.flush()
    return NewKey(key_id=key_id, tenant=tenant, key=key)


def key_id_of(key_or_id: str) -> str:
    match = _KEY.match(key_or_id)
    return match.group(1) if match else key_or_id


def revoke_key(session: Session, key_or_id: str) -> ApiKey:
    """Revoke by the whole key or by its id (the part after ``dbk_``)."""
    row = session.get(ApiKey, key_id_of(key_or_id))
    if row is None:
        raise NotFound(f"no API key {key_id_of(key_or_id)!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def list_keys(session: Session, tenant: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at)
    if tenant:
        query = query.where(ApiKey.tenant == tenant)
    return list(session.scalars(query))


def authenticate(session: Session, key: str) -> str:
    """The tenant owning ``key``; Unauthorized when it is malformed, unknown or revoked."""
    match = _KEY.match(key)
    if not match:
        raise Unauthorized("malformed API key: expected 'Authorization: Bearer dbk_...'")
    row = session.get(ApiKey, match.group(1))
    if row is None or not hmac.compare_digest(row.key_hash, hash_key(key)):
        raise Unauthorized("unknown API key")
    if row.revoked_at is not None:
        raise Unauthorized(f"API key {row.key_id} was revoked at {row.revoked_at.isoformat()}")
    return row.tenant


def audit(
    session: Session,
    action: str,
    *,
    tenant: str | None,
    key_id: str | None,
    client: str | None = None,
    request_id: str | None = None,
) -> None:
    """Record a change made with the admin key (the admin_audit table and the log)."""
    session.add(
        AdminAudit(
            at=utcnow(),
            action=action,
            tenant=tenant,
            key_id=key_id,
            client=(client or "")[:200] or None,
            request_id=request_id,
        )
    )
    log.warning(
        "admin %s tenant=%s key=%s client=%s request_id=%s",
        action,
        tenant,
        key_id,
        client,
        request_id,
        extra={"tenant": tenant, "audit": action},
    )


def audit_log(session: Session, limit: int = 100) -> list[AdminAudit]:
    return list(session.scalars(select(AdminAudit).order_by(AdminAudit.id.desc()).limit(limit)))


def webhook_secret(session: Session, tenant: str) -> str | None:
    return session.scalar(select(Tenant.webhook_secret).where(Tenant.name == tenant))


class StoragePolicy(NamedTuple):
    """How long a tenant's finished jobs are kept (days; 0: forever) and whether the
    original bytes of its files are kept after extraction, by default."""

    retention_days: int
    keep_originals: bool


def storage_policy(session: Session, tenant: str, settings: Settings) -> StoragePolicy:
    """The tenant's own values where it has them, DOCBATCH_RETENTION_DAYS and
    DOCBATCH_KEEP_ORIGINALS otherwise."""
    row = session.get(Tenant, tenant)
    days = row.retention_days if row is not None and row.retention_days is not None else None
    keep = row.keep_originals if row is not None and row.keep_originals is not None else None
    return StoragePolicy(
        settings.retention_days if days is None else days,
        settings.keep_originals if keep is None else keep,
    )


def set_storage_policy(
    session: Session, tenant: str, retention_days: int | None, keep_originals: bool | None
) -> Tenant:
    """Set a tenant's retention (days, 0: forever) and keep_originals default; None leaves
    one as it is. The tenant must exist."""
    row = session.get(Tenant, tenant)
    if row is None:
        raise NotFound(f"tenant {tenant} not found")
    if retention_days is not None:
        if retention_days < 0:
            raise InputError("retention_days", "must be 0 (keep forever) or more")
        row.retention_days = retention_days
    if keep_originals is not None:
        row.keep_originals = keep_originals
    return row
