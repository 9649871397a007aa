"""Webhook outbox rows and signatures (no HTTP here: worker/webhooks.py sends).

A job with a ``webhook_url`` gets one ``webhook_deliveries`` row when it reaches a
terminal state, written in the same transaction as the status (ledger.finalize_job_if_done).
Each call carries::

    Docbatch-Event: job.completed
    Docbatch-Delivery: 17                       (the same on every retry: dedupe on it)
    Docbatch-Signature: t=1700000000,v1=<hex>   HMAC-SHA256(secret, "<t>.<body>")

where ``secret`` is the tenant's webhook secret. Receivers should check the HMAC with a
constant-time compare and reject timestamps older than a few minutes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from docbatch.domain.jobs import get_job, job_public
from docbatch.domain.tenants import webhook_secret
from docbatch.schema.tables import WebhookDelivery, utcnow

SIGNATURE_HEADER = "Docbatch-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes) -> bool:
    """Check a ``Docbatch-Signature`` header (what a receiver does)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


@dataclass
class Outgoing:
    delivery_id: int
    url: str
    event: str
    body: bytes
    secret: str | None
    attempts: int
    job_id: str = ""
    tenant: str = ""
    created_at: dt.datetime | None = None  # when the delivery was queued (its lag)


# A retry message may arrive a moment before the time the last try set.
EARLY_SECONDS = 2.0


def claim(session: Session, delivery_id: int, lease_seconds: float) -> Outgoing | None:
    """Take one due, undelivered delivery for ``lease_seconds`` and build its body; None if
    it is delivered, not due yet, or another sender holds it.

    The claim is a short transaction of its own: it moves ``next_attempt_at`` past the
    lease and commits, so no row lock or open transaction is held during the HTTP call. A
    sender that dies mid-try leaves the row due again when the lease runs out.
    """
    now = utcnow()
    row = session.scalar(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.delivered_at.is_(None),
            WebhookDelivery.next_attempt_at <= now + dt.timedelta(seconds=EARLY_SECONDS),
        )
        .with_for_update(skip_locked=True)
    )
    if row is None:
        return None
    row.next_attempt_at = now + dt.timedelta(seconds=lease_seconds)
    if row.job_id is None:  # job.deleted: the job is gone, its last document is kept here
        job_body, tenant = dict(row.payload or {}), row.tenant or ""
    else:
        job = get_job(session, None, row.job_id)
        job_body, tenant = job_public(session, job).model_dump(mode="json"), job.tenant
    payload = {"event": row.event, "delivery_id": row.id, "job": job_body}
    return Outgoing(
        delivery_id=row.id,
        url=row.url,
        event=row.event,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        secret=webhook_secret(session, tenant),
        attempts=row.attempts,
        job_id=row.job_id or str(job_body.get("id", "")),
        tenant=tenant,
        created_at=row.created_at,
    )


def record_attempt(
    session: Session, delivery_id: int, error: str | None, retry_after: float | None
) -> None:
    """Count a try: delivered when ``error`` is None, else due again after ``retry_after``
    seconds (None: given up)."""
    row = session.get(WebhookDelivery, delivery_id)
    if row is None:
        return
    now = utcnow()
    row.attempts += 1
    if error is None:
        row.delivered_at = now
        row.last_error = None
        return
    row.last_error = error[:2000]
    far = dt.timedelta(days=36500)
    row.next_attempt_at = now + (dt.timedelta(seconds=retry_after) if retry_after else far)


def due(session: Session, before: dt.datetime, max_attempts: int, limit: int = 500) -> list[int]:
    """Undelivered deliveries whose retry time passed before ``before`` (the reconciler's
    sweep: covers a lost message or a crashed sender)."""
    return list(
        session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.delivered_at.is_(None),
                WebhookDelivery.attempts < max_attempts,
                WebhookDelivery.next_attempt_at < before,
            )
            .order_by(WebhookDelivery.id)
            .limit(limit)
        )
    )
