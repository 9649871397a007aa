"""Per-tenant quotas, checked when work is submitted (docs/concepts/fair-share.md).

Three limits are checked here, each the tenant's own (``docbatch tenants set-limits``)
or the DOCBATCH_TENANT_MAX_* default, 0 meaning none:

- ``max_queued_documents`` / ``max_queued_tokens``: documents (counted once per task)
  and estimated tokens of the tenant's unfinished units, like OpenAI's enqueued-token
  limit; the new job's own count toward it;
- ``max_documents_per_day``: documents submitted since 00:00 UTC, the new job's included.

The fourth, ``max_concurrent_units``, is the dispatcher's (docbatch.domain.fairshare).
Over a limit, ``check`` raises QuotaExceeded (the api: 429 with ``Retry-After``); it runs
in the submission's transaction, which then rolls back, so nothing is written. A
per-tenant advisory lock makes two submissions at once see each other.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import asdict, dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from docbatch.domain import tallies
from docbatch.schema.errors import QuotaExceeded
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Job, Tenant, utcnow

NAMESPACE = 0x6471  # first key of the two-int advisory lock: "dq"
QUEUED_RETRY_SECONDS = 60  # a guess: part of the queue has drained by then


@dataclass
class Limits:
    max_queued_documents: int = 0
    max_queued_tokens: int = 0
    max_documents_per_day: int = 0
    max_concurrent_units: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def checked_at_submit(self) -> bool:
        return bool(
            self.max_queued_documents or self.max_queued_tokens or self.max_documents_per_day
        )


@dataclass
class InUse:
    queued_documents: int = 0
    queued_tokens: int = 0
    documents_today: int = 0
    concurrent_units: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def limits_of(session: Session, tenant: str, settings: Settings) -> Limits:
    row = session.get(Tenant, tenant)
    limits = Limits(
        settings.tenant_max_queued_documents,
        settings.tenant_max_queued_tokens,
        settings.tenant_max_documents_per_day,
        settings.tenant_max_concurrent_units,
    )
    if row is not None:
        for name in asdict(limits):
            own = getattr(row, name)
            if own is not None:
                setattr(limits, name, int(own))
    return limits


def _midnight(now: dt.datetime) -> dt.datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def usage_of(session: Session, tenant: str, now: dt.datetime | None = None) -> InUse:
    """What ``tenant`` has in use now (its unfinished units, today's documents)."""
    now = now or utcnow()
    docs, tokens, running = tallies.tenant_open(session, tenant)  # not the tenant's backlog
    today = session.scalar(
        select(func.coalesce(func.sum(Job.document_count), 0)).where(
            Job.tenant == tenant, Job.created_at >= _midnight(now)
        )
    )
    return InUse(int(docs), int(tokens), int(today or 0), int(running))


def _lock(session: Session, tenant: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(tenant.encode()) & 0x7FFFFFFF
        session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": NAMESPACE, "key": key}
        )


def _job_part(session: Session, job: Job) -> InUse:
    """What the (written, not yet committed) ``job`` adds to its tenant's use."""
    docs, tokens = tallies.job_open(session, job.id)
    return InUse(int(docs), int(tokens), int(job.document_count or 0))


def check(session: Session, settings: Settings, tenant: str, job: Job | None = None) -> None:
    """Raise QuotaExceeded if ``tenant`` is over a limit with ``job`` (written in this
    transaction, not yet committed) counted as the request; without ``job``, if it is at
    a limit already (checked before a big upload is read)."""
    limits = limits_of(session, tenant, settings)
    if not limits.checked_at_submit:
        return
    _lock(session, tenant)
    now = utcnow()
    used = usage_of(session, tenant, now)
    asked = _job_part(session, job) if job is not None else InUse(1, 1, 1)
    if job is not None:
        used = InUse(
            *(u - a for u, a in zip(asdict(used).values(), asdict(asked).values(), strict=True))
        )
    day_left = int((_midnight(now) + dt.timedelta(days=1) - now).total_seconds()) + 1
    checks = (
        ("max_queued_documents", limits.max_queued_documents, used.queued_documents,
         asked.queued_documents, QUEUED_RETRY_SECONDS),
        ("max_queued_tokens", limits.max_queued_tokens, used.queued_tokens,
         asked.queued_tokens, QUEUED_RETRY_SECONDS),
        ("max_documents_per_day", limits.max_documents_per_day, used.documents_today,
         asked.documents_today, day_left),
    )  # fmt: skip
    for limit, value, in_use, requested, retry in checks:
        if value and in_use + requested > value:
            raise QuotaExceeded(tenant, limit, value, in_use, requested, retry)
