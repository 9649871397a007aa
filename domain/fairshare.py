"""Who goes next on a queue: weighted fair share across tenants, then priority, size and
age inside one tenant.

The backlog of a queue is its units still ``queued`` and not yet sent to the broker
(``dispatched_at`` NULL). ``pick`` takes the next ``n`` of them in this order:

1. **Across tenants, start-time fair queuing by estimated tokens.** Each tenant has a
   virtual time per queue (``fair_shares``): the estimated tokens picked for it divided
   by its weight. The next unit goes to the backlogged tenant whose start tag, ``max(its
   virtual time, the queue's clock)``, is smallest; its virtual time then grows by the
   unit's tokens / weight, and the queue's clock moves to that start tag. Over a busy
   period each tenant gets tokens in proportion to its weight (3:1 weights, 3:1 tokens;
   the same shares as deficit round robin, with no round to wait for); a tenant alone
   gets everything (work-conserving); a tenant that was idle starts at the clock, so it
   saved no credit to burst with.
2. **Inside a tenant**, the highest job priority first; at one priority the job with
   the fewest estimated tokens left, minus an age credit
   (DOCBATCH_FAIR_AGE_CREDIT_TOKENS_PER_SECOND, capped at
   DOCBATCH_FAIR_MAX_AGE_CREDIT_TOKENS): a small job is not starved by a big one
   submitted earlier, and a big job still progresses. A job's units go in id order.
   Tokens left are counted over the job's next ``LOOKAHEAD_UNITS`` units, so a pick
   reads the same few rows however deep the backlog (one probe per job).
   A job being cancelled sends nothing more: its sweep closes its backlog.
3. **Concurrency quota.** A tenant with DOCBATCH_TENANT_MAX_CONCURRENT_UNITS (or its own
   limit) units in flight (running, or sent and not yet claimed) is passed over while
   another tenant has backlog on the queue, never when it is alone.

A unit is picked **overtaking** when its tenant's virtual time was behind the queue's
clock: the tenant had no backlog here when the clock last moved (it has just arrived,
or a quota held it back). A worker chaining units picks its next one while the previous
pick still waits to start, so the clock already counts that claimed-ahead unit; an
overtaking unit would have gone before it had it been there when it was picked, and the
chain runs it first (docbatch.worker.runner). ``overtaking`` asks, with no pick, whether
such a unit waits in the backlog.

Callers hold the queue's dispatch lock (``lock_queue``) for the transaction, so the
virtual times and the picked units are one consistent decision.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import DateTime, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from docbatch.schema.settings import Settings
from docbatch.schema.tables import FairShare, Job, Unit, UnitState

NAMESPACE = 0x6466  # first key of the two-int advisory lock: "df" (leases "db", cancel "dc")
CLOCK = ""  # the fair_shares row of the queue's own clock


def lock_queue(session: Session, queue: str) -> None:
    """Serialise dispatch decisions on ``queue`` until this transaction ends (Postgres;
    SQLite serialises every write already)."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(queue.encode()) & 0x7FFFFFFF
        session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": NAMESPACE, "key": key}
        )


@dataclass
class JobBacklog:
    """One job's backlog on the queue."""

    job_id: str
    tenant: str
    priority: int
    created_at: dt.datetime
    tokens: int
    units: int
    unit_ids: list[tuple[int, int]] = field(default_factory=list)  # (id, est_tokens)
    # Its tenant's (1.0, None: no tenant row or no limit of its own) and the queue's clock.
    weight: float = 1.0
    max_concurrent: int | None = None
    vtime: float = 0.0
    clock: float = 0.0

    def rank(self, now: dt.datetime, settings: Settings) -> tuple[int, float, str]:
        created = self.created_at
        if created.tzinfo is None:  # SQLite hands back naive UTC
            created = created.replace(tzinfo=dt.UTC)
        age = max(0.0, (now - created).total_seconds())
        credit = min(
            float(settings.fair_max_age_credit_tokens),
            age * settings.fair_age_credit_tokens_per_second,
        )
        return (-self.priority, self.tokens - credit, self.job_id)


# How far into a job's backlog ``backlog`` looks to rank it: its next units' tokens, up
# to this many units (2M tokens at the default DOCBATCH_UNIT_TOKENS, twice the largest
# age credit). A job with more units waiting ranks as big as its next ones make it;
# reading no further keeps a pick's cost the same for a backlog of 100 units or 100,000.
LOOKAHEAD_UNITS = 256

# The jobs with backlog on a queue by a loose index scan of ix_units_backlog (one probe
# per job, not a row per unit), each with its next LOOKAHEAD_UNITS units' tokens, and its
# tenant's weight, concurrency limit and virtual time on the queue, and the queue's clock
# (one statement, where a pick used to ask three more); jobs being cancelled are left out
# (their sweep closes their backlog: docbatch.worker.cancel).
_BACKLOGGED_JOBS = """
WITH RECURSIVE backlogged(job_id) AS (
    SELECT min(job_id) FROM units
    WHERE queue = :queue AND state = 'queued' AND dispatched_at IS NULL
    UNION ALL
    SELECT (
        SELECT min(u.job_id) FROM units u
        WHERE u.queue = :queue AND u.state = 'queued' AND u.dispatched_at IS NULL
          AND u.job_id > b.job_id
    ) FROM backlogged b WHERE b.job_id IS NOT NULL
)
"""
_BACKLOG_SQL = text(
    _BACKLOGGED_JOBS
    + """
SELECT j.id, j.tenant, j.priority, j.created_at,
    (SELECT coalesce(sum(n.est_tokens), 0) FROM (
        SELECT u.est_tokens FROM units u
        WHERE u.queue = :queue AND u.job_id = b.job_id
          AND u.state = 'queued' AND u.dispatched_at IS NULL
        ORDER BY u.id LIMIT :lookahead) n) AS tokens,
    (SELECT count(*) FROM (
        SELECT u.id FROM units u
        WHERE u.queue = :queue AND u.job_id = b.job_id
          AND u.state = 'queued' AND u.dispatched_at IS NULL
        ORDER BY u.id LIMIT :lookahead) n) AS units,
    t.weight, t.max_concurrent_units, f.vtime,
    (SELECT c.vtime FROM fair_shares c WHERE c.queue = :queue AND c.tenant = '') AS clock
FROM backlogged b JOIN jobs j ON j.id = b.job_id
LEFT JOIN tenants t ON t.name = j.tenant
LEFT JOIN fair_shares f ON f.queue = :queue AND f.tenant = j.tenant
WHERE j.status NOT IN ('cancelling', 'cancelled')
"""
).columns(created_at=DateTime(timezone=True))


def backlog(session: Session, queue: str) -> list[JobBacklog]:
    """The queue's backlog, one row per job: ``tokens`` and ``units`` counted over its next
    LOOKAHEAD_UNITS units at most."""
    rows = session.execute(_BACKLOG_SQL, {"queue": queue, "lookahead": LOOKAHEAD_UNITS}).all()
    return [
        JobBacklog(
            str(r[0]),
            str(r[1]),
            int(r[2] or 0),
            r[3],
            int(r[4] or 0),
            int(r[5]),
            weight=max(float(r[6] or 1.0), 1e-6),
            max_concurrent=None if r[7] is None else int(r[7]),
            vtime=float(r[8] or 0.0),
            clock=float(r[9] or 0.0),
        )
        for r in rows
    ]


# The backlogged jobs whose next unit would be picked overtaking a claimed-ahead unit of
# :tenant's job at :priority: another tenant's behind the queue's clock, or a more urgent
# job of the same tenant. One probe per backlogged job, none of the lookahead.
_OVERTAKING_SQL = text(
    _BACKLOGGED_JOBS
    + """
SELECT j.id
FROM backlogged b JOIN jobs j ON j.id = b.job_id
LEFT JOIN fair_shares f ON f.queue = :queue AND f.tenant = j.tenant
WHERE j.status NOT IN ('cancelling', 'cancelled')
  AND ((j.tenant <> :tenant AND coalesce(f.vtime, 0) < coalesce(
          (SELECT c.vtime FROM fair_shares c WHERE c.queue = :queue AND c.tenant = ''), 0))
       OR (j.tenant = :tenant AND j.priority > :priority))
"""
)


def overtaking(session: Session, queue: str, tenant: str, priority: int) -> set[str]:
    """The jobs with backlog on ``queue`` whose next unit a pick now would make overtaking
    a unit of ``tenant`` at ``priority`` that a chain claimed ahead (the module
    docstring); no lock, nothing changed. Empty while that tenant is alone."""
    rows = session.execute(
        _OVERTAKING_SQL, {"queue": queue, "tenant": tenant, "priority": priority}
    ).all()
    return {str(r[0]) for r in rows}


def in_flight(session: Session, tenants: set[str]) -> dict[str, int]:
    """Units per tenant running or sent to a worker and not yet claimed (every queue)."""
    rows = session.execute(
        select(Job.tenant, func.count())
        .join(Unit, Unit.job_id == Job.id)
        .where(
            Job.tenant.in_(tenants),
            or_(
                Unit.state == UnitState.running.value,
                (Unit.state == UnitState.queued.value) & Unit.dispatched_at.is_not(None),
            ),
        )
        .group_by(Job.tenant)
    ).all()
    return {str(t): int(n) for t, n in rows}


def _upsert(session: Session, rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    ins = pg_insert(FairShare) if dialect == "postgresql" else sqlite_insert(FairShare)
    session.execute(
        ins.on_conflict_do_update(
            index_elements=["queue", "tenant"], set_={"vtime": ins.excluded.vtime}
        ),
        rows,
    )


class Picked(NamedTuple):
    """One unit ``picks`` chose, with what a chain needs to order it (see the module
    docstring)."""

    unit_id: int
    tenant: str
    priority: int
    overtaking: bool  # its tenant was behind the queue's clock


def pick(session: Session, queue: str, n: int, settings: Settings, now: dt.datetime) -> list[int]:
    """The next ``n`` (at most) units of ``queue``'s backlog in fair order, marked sent
    (``dispatched_at = now``); the caller holds ``lock_queue`` and sends them (or claims
    them) after commit."""
    return [p.unit_id for p in picks(session, queue, n, settings, now)]


def picks(
    session: Session, queue: str, n: int, settings: Settings, now: dt.datetime
) -> list[Picked]:
    """``pick``, with each unit's tenant, job priority and whether it is overtaking."""
    if n <= 0:
        return []
    jobs = backlog(session, queue)
    if not jobs:
        return []
    weight = {j.tenant: j.weight for j in jobs}
    default = settings.tenant_max_concurrent_units
    limits = {j.tenant: default if j.max_concurrent is None else j.max_concurrent for j in jobs}
    busy = (
        in_flight(session, {t for t, lim in limits.items() if lim}) if any(limits.values()) else {}
    )
    clock = jobs[0].clock
    vtime = {j.tenant: j.vtime for j in jobs}
    by_tenant: dict[str, list[JobBacklog]] = {}
    for job in jobs:
        by_tenant.setdefault(job.tenant, []).append(job)
    picked: list[Picked] = []
    while len(picked) < n and by_tenant:
        eligible = [
            t for t in by_tenant if not limits.get(t) or busy.get(t, 0) < limits[t]
        ] or list(by_tenant)  # alone (or everyone at its cap): work-conserving
        tenant = min(eligible, key=lambda t: (max(vtime[t], clock), -weight[t], t))
        start = max(vtime[tenant], clock)
        job = min(by_tenant[tenant], key=lambda j: j.rank(now, settings))
        if not job.unit_ids:
            job.unit_ids = [
                (int(i), int(e or 0))
                for i, e in session.execute(
                    select(Unit.id, Unit.est_tokens)
                    .where(
                        Unit.job_id == job.job_id,
                        Unit.queue == queue,
                        Unit.state == UnitState.queued.value,
                        Unit.dispatched_at.is_(None),
                    )
                    .order_by(Unit.id)
                    .limit(max(n, 16))
                ).all()
            ]
        if not job.unit_ids:  # gone meanwhile (cannot happen under the lock)
            by_tenant[tenant].remove(job)
            if not by_tenant[tenant]:
                del by_tenant[tenant]
            continue
        unit_id, est = job.unit_ids.pop(0)
        picked.append(Picked(unit_id, tenant, job.priority, vtime[tenant] < clock))
        busy[tenant] = busy.get(tenant, 0) + 1
        vtime[tenant] = start + max(est, 1) / weight[tenant]
        clock = start
        job.tokens -= est
        job.units -= 1
        if job.units <= 0:
            by_tenant[tenant].remove(job)
            if not by_tenant[tenant]:
                del by_tenant[tenant]
    if picked:
        session.execute(
            update(Unit).where(Unit.id.in_([p.unit_id for p in picked])).values(dispatched_at=now)
        )
        _upsert(
            session,
            [{"queue": queue, "tenant": t, "vtime": v} for t, v in vtime.items()]
            + [{"queue": queue, "tenant": CLOCK, "vtime": clock}],
        )
    return picked
