"""Sending webhook deliveries: one HTTP POST per try, retried with doubling backoff.

Called by the ``docbatch.deliver_webhook`` task (maintenance queue). At least once:
a delivery is marked delivered only after a 2xx, so a crash between the POST and the
commit sends it again (receivers dedupe on ``Docbatch-Delivery``).
"""

from __future__ import annotations

import logging
import time

import httpx

from schema import webhooks
from schema.db import transaction
from schema.settings import Settings

log = logging.getLogger("docbatch.webhooks")


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before try number ``attempts + 1``."""
    return float(min(settings.webhook_retry_seconds * 2 ** max(attempts - 1, 0), 3600.0))


def deliver(delivery_id: int, settings: Settings) -> tuple[str, float | None]:
    """Try one delivery; returns (outcome, seconds until the next try or None)."""
    with transaction() as s:
        out = webhooks.lock_due(s, delivery_id)
        if out is None:
            return "skipped", None
        error: str | None
        if out.secret is None:
            error = "the job's tenant has no webhook secret"
        else:
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "docbatch-webhook/1",
                "Docbatch-Event": out.event,
                "Docbatch-Delivery": str(out.delivery_id),
                webhooks.SIGNATURE_HEADER: webhooks.sign(out.secret, timestamp, out.body),
            }
            try:
                resp = httpx.post(
                    out.url,
                    content=out.body,
                    headers=headers,
                    timeout=settings.webhook_timeout_seconds,
                )
                error = None if resp.is_success else f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        tries = out.attempts + 1
        retry = backoff(settings, tries) if tries < settings.webhook_max_attempts else None
        webhooks.record_attempt(s, delivery_id, error, retry)
    if error is None:
        return "delivered", None
    log.warning("webhook %d to %s failed (try %d): %s", delivery_id, out.url, tries, error)
    return ("retry" if retry is not None else "gave up"), retry
