"""Sending webhook deliveries: one HTTP POST per try, retried with doubling backoff.

Called by the ``docbatch.deliver_webhook`` task on the webhooks queue, which only
``docbatch webhooks`` consumes: a process that runs no model, so a slow receiver never
holds a GPU worker. Each try:

1. claims the outbox row (a short transaction that leases it and commits);
2. resolves the host, refuses non-public addresses (docbatch.domain.netguard), and POSTs to the
   checked address, with no transaction open, within DOCBATCH_WEBHOOK_DEADLINE_SECONDS
   in total, the name lookup included (a slow resolver or a receiver trickling a byte at
   a time is cut off at the deadline, well inside the claim's lease, so no second sender
   POSTs the same delivery meanwhile); of the answer only the status and at most
   ``RESPONSE_READ_BYTES`` of the body are read;
3. records the outcome in a second short transaction.

At least once: a delivery is marked delivered only after a 2xx, so a crash between the
POST and the record sends it again once the lease runs out (receivers dedupe on
``Docbatch-Delivery``). Logs name the receiver by scheme and host only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import httpx

from docbatch.domain import netguard, webhooks
from docbatch.schema.db import transaction
from docbatch.schema.logs import log_context
from docbatch.schema.settings import Settings
from docbatch.worker import metrics

log = logging.getLogger("docbatch.webhooks")

# A receiver's answer body is read up to this many bytes, then the connection is closed:
# only the status counts, and a receiver answering 200 with gigabytes costs us nothing.
RESPONSE_READ_BYTES = 4096


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before try number ``attempts + 1``."""
    return float(min(settings.webhook_retry_seconds * 2 ** max(attempts - 1, 0), 3600.0))


async def _post(
    target: netguard.Target, url: str, body: bytes, headers: dict[str, str], settings: Settings
) -> int:
    # Connect to the address that was checked, not to whatever the name resolves to now;
    # the Host header and the TLS server name (certificate check) stay the URL's host.
    pinned = httpx.URL(url).copy_with(host=str(target.address))
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    if httpx.URL(url).port is not None:
        host_header += f":{target.port}"
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    async with httpx.AsyncClient(
        timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False
    ) as client:
        request = client.build_request(
            "POST",
            pinned,
            content=body,
            headers={**headers, "Host": host_header},
            extensions=extensions,
        )
        response = await client.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= RESPONSE_READ_BYTES:
                    break
        finally:
            await response.aclose()
        return response.status_code


def post_within_deadline(
    target: netguard.Target,
    url: str,
    body: bytes,
    headers: dict[str, str],
    settings: Settings,
    seconds: float,
) -> int:
    """POST and return the status code; TimeoutError once ``seconds`` pass, whichever
    phase (connect, headers, body) the receiver is dawdling in."""
    return asyncio.run(
        asyncio.wait_for(_post(target, url, body, headers, settings), max(seconds, 0.0))
    )


def resolve_within(url: str, allow: list[str], seconds: float) -> netguard.Target:
    """``netguard.resolve_webhook`` given at most ``seconds``; TimeoutError after that.

    getaddrinfo cannot be interrupted, so it runs on a daemon thread that a resolver
    slower than the deadline leaves to finish on its own (its answer is dropped)."""
    answer: list[netguard.Target | netguard.UnsafeDestination] = []

    def resolve() -> None:
        try:
            answer.append(netguard.resolve_webhook(url, allow))
        except netguard.UnsafeDestination as exc:
            answer.append(exc)

    thread = threading.Thread(target=resolve, name="webhook-resolve", daemon=True)
    thread.start()
    thread.join(max(seconds, 0.0))
    if not answer:
        raise TimeoutError
    if isinstance(answer[0], netguard.UnsafeDestination):
        raise answer[0]
    return answer[0]


def attempt(out: webhooks.Outgoing, settings: Settings) -> str | None:
    """One try of ``out``; None when the receiver answered 2xx, else what went wrong."""
    if out.secret is None:
        return "the job's tenant has no webhook secret"
    late = (
        f"no complete answer within {settings.webhook_deadline_seconds:g} s "
        "(DOCBATCH_WEBHOOK_DEADLINE_SECONDS)"
    )
    deadline = time.monotonic() + settings.webhook_deadline_seconds
    try:
        target = resolve_within(
            out.url, settings.webhook_allow_networks, settings.webhook_deadline_seconds
        )
    except netguard.UnsafeDestination as exc:
        return f"not sent: {exc}"
    except TimeoutError:
        return f"not sent: the host did not resolve in time; {late}"
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "docbatch-webhook/1",
        "Docbatch-Event": out.event,
        "Docbatch-Delivery": str(out.delivery_id),
        webhooks.SIGNATURE_HEADER: webhooks.sign(out.secret, timestamp, out.body),
    }
    try:
        status = post_within_deadline(
            target, out.url, out.body, headers, settings, deadline - time.monotonic()
        )
    except TimeoutError:
        return late
    except (httpx.HTTPError, OSError) as exc:
        # The exception text can hold the URL: keep the type and the host only.
        return f"{type(exc).__name__} talking to {netguard.redact(out.url)}"
    return None if 200 <= status < 300 else f"HTTP {status}"


def deliver(delivery_id: int, settings: Settings) -> tuple[str, float | None]:
    """Try one delivery; returns (outcome, seconds until the next try or None)."""
    lease = settings.webhook_deadline_seconds + 30.0
    with transaction(settings) as s:
        out = webhooks.claim(s, delivery_id, lease)
    if out is None:
        return "skipped", None
    with log_context(job_id=out.job_id or None, tenant=out.tenant or None):
        return _deliver(out, settings)


def _deliver(out: webhooks.Outgoing, settings: Settings) -> tuple[str, float | None]:
    delivery_id = out.delivery_id
    error = attempt(out, settings)
    tries = out.attempts + 1
    retry = backoff(settings, tries) if tries < settings.webhook_max_attempts else None
    with transaction(settings) as s:
        webhooks.record_attempt(s, delivery_id, error, retry)
    metrics.webhook_attempt(error is None, retry is None, out.created_at)
    if error is None:
        log.info("webhook %d delivered to %s", delivery_id, netguard.redact(out.url))
        return "delivered", None
    log.warning(
        "webhook %d to %s failed (try %d): %s",
        delivery_id,
        netguard.redact(out.url),
        tries,
        error,
    )
    return ("retry" if retry is not None else "gave up"), retry
