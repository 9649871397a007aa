"""The unit tallies (docbatch.domain.tallies): exact through every way a unit moves, and
what lets "is the job done", a tenant's quota use and the queued-units metric be answered
without reading the backlog (issue 25)."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import delete, select, text, update

from docbatch.domain import jobs, ledger, quotas, tallies
from docbatch.domain.outbox import unit_of_work
from docbatch.domain.retry import RetryPolicy
from docbatch.schema.db import new_session, transaction
from docbatch.schema.settings import Settings, get_settings
from docbatch.schema.tables import Unit, UnitState

OPEN = "state IN ('waiting', 'queued', 'running')"


def _settings(prefix: str, unit_docs: int) -> Settings:
    return get_settings().model_copy(
        update={"queue_prefix": prefix, "unit_max_documents": unit_docs}
    )


def _job(settings: Settings, tenant: str, docs: int, tasks: list[Any] | None = None) -> str:
    with unit_of_work(settings, publish=False) as s:
        return jobs.create_job(
            s,
            settings,
            tenant=tenant,
            tasks=tasks or [{"type": "summarize"}],
            documents=(
                ({"custom_id": f"d{i}", "text": f"Document {i}, a sentence or two."}, None)
                for i in range(docs)
            ),
        ).job.id


def _both(job_id: str) -> tuple[dict[tuple[str, ...], tuple[int, ...]], ...]:
    """The job's tallies beside the same figures counted from its units."""
    with new_session(get_settings()) as s:
        kept = s.execute(
            text(
                "SELECT task, queue, state, units, documents, est_tokens FROM unit_tallies "
                "WHERE job_id = :j AND (units, documents, est_tokens) <> (0, 0, 0)"
            ),
            {"j": job_id},
        ).all()
        counted = s.execute(
            text(
                "SELECT task, queue, state, count(*), sum(seq_hi - seq_lo + 1), "
                f"sum(est_tokens) FROM units WHERE job_id = :j AND {OPEN} "
                "GROUP BY task, queue, state"
            ),
            {"j": job_id},
        ).all()
    return (
        {tuple(r[:3]): tuple(int(v) for v in r[3:]) for r in kept},
        {tuple(r[:3]): tuple(int(v) for v in r[3:]) for r in counted},
    )


def _exact(job_id: str) -> dict[tuple[str, ...], tuple[int, ...]]:
    kept, counted = _both(job_id)
    assert kept == counted
    return kept


def _claim(settings: Settings, unit_id: int) -> Any:
    with unit_of_work(settings, publish=False) as s:
        claim = ledger.claim_unit(s, unit_id, "test", RetryPolicy.of(settings))
        return None if claim is None else claim.unit.id


def test_the_tallies_follow_every_move_of_a_unit(database: str) -> None:
    settings = _settings(f"tl{secrets.token_hex(3)}", unit_docs=4)
    tenant = f"t{secrets.token_hex(2)}"
    job_id = _job(settings, tenant, 20, [{"type": "summarize"}, {"type": "tags"}])
    queue = settings.queue_for("summarize")
    assert _exact(job_id)[("summarize", queue, "queued")][:2] == (5, 20)
    with new_session(get_settings()) as s:
        units = list(
            s.scalars(
                text("SELECT id FROM units WHERE job_id = :j AND task = 'summarize' ORDER BY id"),
                {"j": job_id},
            )
        )
    first, second = units[0], units[1]
    assert _claim(settings, first) == first  # queued -> running
    _exact(job_id)
    assert _claim(settings, first) == first  # redelivered, no lease seen: claimed again
    assert _exact(job_id)[("summarize", queue, "running")][0] == 1  # still one unit
    with unit_of_work(settings, publish=False) as s:  # given back
        assert ledger.release_unit(s, first)
    _exact(job_id)
    with transaction(get_settings()) as s:  # stopped its worker twice: split at its claim
        s.execute(update(Unit).where(Unit.id == second).values(attempts=2))
    assert _claim(settings, second) == second
    assert _exact(job_id)[("summarize", queue, "queued")][:2] == (5, 18)  # a new half
    with unit_of_work(settings, publish=False) as s:  # closed, then closed again
        unit = s.get(Unit, second)
        assert ledger.close_unit(s, unit, UnitState.done)
        assert not ledger.close_unit(s, unit, UnitState.done)
    _exact(job_id)
    with unit_of_work(settings, publish=False) as s:  # cancelled: the sweep's batches
        jobs.cancel_job(s, tenant, job_id)
    _exact(job_id)
    more = True
    while more:
        with unit_of_work(settings, publish=False) as s:
            _, more = jobs.cancel_queued_batch(s, job_id, 5)
        _exact(job_id)
    with new_session(get_settings()) as s:
        assert s.scalar(text("SELECT status FROM jobs WHERE id = :j"), {"j": job_id}) == (
            "cancelled"
        )
        left = s.scalar(text("SELECT count(*) FROM unit_tallies WHERE job_id = :j"), {"j": job_id})
    assert left == 0  # an ended job's tallies go
    other = _job(settings, tenant, 8)
    assert _exact(other)
    with transaction(get_settings()) as s:  # units deleted with their job open
        s.execute(delete(Unit).where(Unit.job_id == other))
    assert _exact(other) == {}


def _units_read(s: Any) -> int:
    """Scans of ``units`` this transaction has started (sequential and index)."""
    return int(
        s.scalar(
            text(
                "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) "
                "FROM pg_stat_xact_user_tables WHERE relname = 'units'"
            )
        )
        or 0
    )


def test_a_deep_backlog_is_not_read_to_answer_done_quota_or_metric(database: str) -> None:
    """Every unit close asks whether its job is done, every submit under a quota what the
    tenant has queued, every scrape how many units are queued: none of them reads the
    units any more (they counted the job's, the tenant's or every queued unit)."""
    settings = _settings(f"td{secrets.token_hex(3)}", unit_docs=1)
    tenant = f"t{secrets.token_hex(2)}"
    job_id = _job(settings, tenant, 300)
    queue = settings.queue_for("summarize")
    with unit_of_work(settings, publish=False) as s:
        before = _units_read(s)
        job = ledger.lock_job(s, job_id)
        assert not ledger.finalize_job_if_done(s, job)
        used = quotas.usage_of(s, tenant)
        per_queue = tallies.queued_by_queue(s)
        per_tenant = tallies.queued_by_tenant(s)
        assert _units_read(s) == before  # not one scan of units
    assert (used.queued_documents, used.concurrent_units) == (300, 0)
    assert used.queued_tokens > 0
    assert per_queue[queue] == 300
    assert (tenant, "summarize", 300) in per_tenant


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def test_the_oldest_queued_unit_is_one_index_entry_per_deployment(database: str) -> None:
    """``docbatch_oldest_queued_unit_age_seconds`` grouped every queued unit by task at
    each scrape; it reads the first entry of each deployment's queued units now."""
    settings = _settings(f"ta{secrets.token_hex(3)}", unit_docs=1)
    job_id = _job(settings, f"t{secrets.token_hex(2)}", 300)
    with transaction(get_settings()) as s:  # published over five minutes, oldest first
        s.execute(
            text(
                "UPDATE units SET published_at = now() - (400 - seq_lo) * interval '1 s' "
                "WHERE job_id = :j"
            ),
            {"j": job_id},
        )
    with new_session(get_settings()) as s:
        oldest = tallies.oldest_queued(s)
        first = s.scalar(
            text("SELECT min(published_at) FROM units WHERE state = 'queued' AND task = :t"),
            {"t": "summarize"},
        )
        statement = (
            select(Unit.published_at)
            .where(Unit.state == "queued", Unit.task == "summarize")
            .where(Unit.published_at.is_not(None))
            .order_by(Unit.published_at)
            .limit(1)
        )  # what tallies.oldest_queued asks per deployment
        compiled = statement.compile(s.get_bind(), compile_kwargs={"literal_binds": True})
        plan = s.scalar(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}"))[0]["Plan"]
    assert oldest["summarize"] == first
    scans = [n for n in _nodes(plan) if n.get("Index Name") == "ix_units_queued_age"]
    assert scans and scans[0]["Actual Rows"] == 1, plan  # one entry, not the 300


def test_a_cancel_asks_how_much_is_queued_without_reading_the_backlog(database: str) -> None:
    """A cancel closes the queued units at once when they hold few documents
    (DOCBATCH_CANCEL_BATCH_DOCUMENTS); finding out summed every unit not started."""
    settings = _settings(f"tc{secrets.token_hex(3)}", unit_docs=1)
    tenant = f"t{secrets.token_hex(2)}"
    big, small = _job(settings, tenant, 300), _job(settings, tenant, 3)
    with unit_of_work(settings, publish=False) as s:
        before = _units_read(s)
        assert jobs.cancel_job(s, tenant, big, inline_documents=10).status == "cancelling"
        assert _units_read(s) == before  # 300 queued: left to the sweep, none read
    with unit_of_work(settings, publish=False) as s:
        assert jobs.cancel_job(s, tenant, small, inline_documents=10).status == "cancelled"
