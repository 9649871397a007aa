"""Fair dispatch across tenants (docbatch.domain.dispatch, docbatch.domain.fairshare), on
the real Postgres, Redis and worker processes: a small job is not stuck behind another
tenant's big one, weights share the tokens, a tenant alone uses every worker, and the
broker holds a few ids per queue however big the job."""

from __future__ import annotations

import secrets
import time
from typing import Any

import redis as redis_lib
from sqlalchemy import func, select

from docbatch.api.metrics import priority_queue_names
from docbatch.domain import dispatch, fairshare, jobs
from docbatch.domain.outbox import unit_of_work
from docbatch.domain.tenants import ensure_tenant
from docbatch.schema.db import new_session, transaction
from docbatch.schema.settings import Settings, get_settings
from docbatch.schema.tables import Job, Unit, utcnow
from tests.fakeworkers import fake_worker_env
from tests.fixtures import WorkerProcess, wait_for_job
from tests.settings_env import override


def _settings(prefix: str, **update: Any) -> Settings:
    return get_settings().model_copy(update={"queue_prefix": prefix, **update})


def _job(settings: Settings, tenant: str, n_docs: int, words: int = 40, **kw: Any) -> str:
    """A job written straight to Postgres; its units wait in the backlog (nothing sent)."""
    docs = (
        ({"custom_id": f"d{i}", "text": " ".join(["word"] * words) + f" {i}"}, None)
        for i in range(n_docs)
    )
    with unit_of_work(settings, publish=False) as s:
        new = jobs.create_job(
            s, settings, tenant=tenant, tasks=[{"type": "summarize"}], documents=docs, **kw
        )
        return new.job.id


def _set_weight(tenant: str, weight: float) -> None:
    with transaction(get_settings()) as s:
        ensure_tenant(s, tenant).weight = weight


def _pick(settings: Settings, n: int) -> list[int]:
    queue = settings.queue_for("summarize")
    with transaction(settings) as s:
        fairshare.lock_queue(s, queue)
        return fairshare.pick(s, queue, n, settings, utcnow())


def _owners(unit_ids: list[int]) -> list[tuple[str, int]]:
    """(tenant, est_tokens) of each unit, in the order given."""
    with new_session(get_settings()) as s:
        rows = dict(
            (u, (t, e))
            for u, t, e in s.execute(
                select(Unit.id, Job.tenant, Unit.est_tokens)
                .join(Job, Job.id == Unit.job_id)
                .where(Unit.id.in_(unit_ids))
            ).all()
        )
    return [rows[u] for u in unit_ids]


def test_weights_3_to_1_give_3_to_1_token_shares(database: str) -> None:
    settings = _settings(f"w{secrets.token_hex(3)}", unit_max_documents=4)
    heavy, light = f"heavy{secrets.token_hex(2)}", f"light{secrets.token_hex(2)}"
    _set_weight(heavy, 3.0)
    _set_weight(light, 1.0)
    _job(settings, heavy, 800)  # 200 units each: both stay backlogged through the picks
    _job(settings, light, 800)
    picked: list[int] = []
    while len(picked) < 160:
        picked += _pick(settings, 7)
    tokens = {heavy: 0, light: 0}
    for tenant, est in _owners(picked):
        tokens[tenant] += est
    share = tokens[heavy] / tokens[light]
    assert 2.7 <= share <= 3.3, tokens
    # Interleaved, not in bursts: every window of 8 picks has the light tenant in it.
    owners = [t for t, _ in _owners(picked)]
    assert all(light in owners[i : i + 8] for i in range(0, len(owners) - 8))


def test_a_returning_tenant_saved_no_credit_and_a_lone_one_gets_everything(
    database: str,
) -> None:
    settings = _settings(f"c{secrets.token_hex(3)}", unit_max_documents=4)
    a, b = f"a{secrets.token_hex(2)}", f"b{secrets.token_hex(2)}"
    _job(settings, a, 200)
    alone = _owners(_pick(settings, 20))
    assert {t for t, _ in alone} == {a}  # work-conserving: nobody else waits
    _job(settings, b, 200)
    # b was idle: it starts at the queue's clock, so the two alternate from here on
    # instead of b catching up on the 20 units a had alone.
    mixed = [t for t, _ in _owners(_pick(settings, 20))]
    assert 9 <= mixed.count(b) <= 11, mixed


def test_a_tenant_arriving_behind_the_clock_is_picked_overtaking(database: str) -> None:
    """A tenant that had no backlog while the clock moved is picked overtaking (a chain
    runs its unit before the one it claimed ahead); ``overtaking`` finds its job without
    a pick, and a more urgent job of the same tenant, and nothing once the arrival has
    had its unit or while a tenant is alone."""
    settings = _settings(f"o{secrets.token_hex(3)}", unit_max_documents=4)
    queue = settings.queue_for("summarize")
    a, b = f"a{secrets.token_hex(2)}", f"b{secrets.token_hex(2)}"
    _job(settings, a, 40)

    def picks(n: int) -> list[fairshare.Picked]:
        with transaction(settings) as s:
            fairshare.lock_queue(s, queue)
            return fairshare.picks(s, queue, n, settings, utcnow())

    def waiting(tenant: str) -> set[str]:
        with new_session(get_settings()) as s:
            return fairshare.overtaking(s, queue, tenant, 0)

    alone = picks(3)
    assert [(p.tenant, p.overtaking) for p in alone] == [(a, False)] * 3
    assert waiting(a) == set()
    arrived = _job(settings, b, 8)
    assert waiting(a) == {arrived}
    assert waiting(b) == set()  # b's units pass nobody of b
    nxt = picks(3)
    assert (nxt[0].tenant, nxt[0].overtaking) == (b, True)  # it starts at the clock
    assert {p.tenant for p in nxt} == {a, b} and not any(p.overtaking for p in nxt[1:])
    assert waiting(a) == set()  # b has had its turn: it is no longer behind
    urgent = _job(settings, a, 4, priority=5)
    assert waiting(a) == {urgent}
    assert [(p.priority, p.overtaking) for p in picks(1)] == [(5, False)]


def test_inside_a_tenant_priority_then_the_smaller_job(database: str) -> None:
    settings = _settings(f"p{secrets.token_hex(3)}", unit_max_documents=4)
    tenant = f"t{secrets.token_hex(2)}"
    big = _job(settings, tenant, 400)
    small = _job(settings, tenant, 8)
    urgent = _job(settings, tenant, 40, priority=5)
    with new_session(get_settings()) as s:
        job_of = dict(s.execute(select(Unit.id, Unit.job_id)).all())
    order = [job_of[u] for u in _pick(settings, 14)]
    assert order[:10] == [urgent] * 10  # the priority-5 job's 10 units first
    assert order[10:12] == [small, small]  # then the small job, though submitted later
    assert order[12:] == [big, big]


def test_a_chain_takes_an_urgent_unit_already_sent_before_the_routine_backlog(
    database: str,
) -> None:
    """dispatch.next_units (what a worker chaining units claims next): the backlog first at
    one priority, but a unit of the same tenant already sent and more urgent than the
    backlog's next goes before it; the backlog unit it passed stays in the backlog."""
    settings = _settings(f"n{secrets.token_hex(3)}", unit_max_documents=1)
    queue = settings.queue_for("summarize")
    tenant = f"t{secrets.token_hex(2)}"
    routine = _job(settings, tenant, 4)
    with new_session(get_settings()) as s:
        r0, r1, r2, r3 = s.scalars(select(Unit.id).where(Unit.job_id == routine).order_by(Unit.id))
    assert _pick(settings, 1) == [r0]  # sent to the broker, not yet claimed
    assert dispatch.next_units(settings, queue, 8)[:2] == ([r1], True)  # one priority: backlog
    urgent = _job(settings, tenant, 2, priority=9)
    with new_session(get_settings()) as s:
        u0, u1 = s.scalars(select(Unit.id).where(Unit.job_id == urgent).order_by(Unit.id))
    assert _pick(settings, 1) == [u0]  # the urgent job's first unit sent too
    assert dispatch.next_units(settings, queue, 8)[:2] == ([u1], True)  # as urgent: backlog
    # The backlog's next is routine now: the units already sent go first, the urgent ones
    # first (those the chain was handed were marked sent too; none of them was claimed here)
    assert dispatch.next_units(settings, queue, 8)[:2] == ([u0, u1, r0, r1], False)
    with new_session(get_settings()) as s:
        unsent = s.scalars(
            select(Unit.id).where(Unit.job_id == routine, Unit.dispatched_at.is_(None))
        ).all()
    assert sorted(unsent) == [r2, r3]


def _queue_length(broker_url: str, queue: str) -> int:
    client = redis_lib.Redis.from_url(broker_url)
    return sum(int(client.llen(k)) for k in priority_queue_names(queue))


def test_the_broker_holds_a_few_ids_however_big_the_job(api: Any, private_queues: str) -> None:
    docs = [{"custom_id": f"d{i}", "text": f"document {i}"} for i in range(600)]
    with override(unit_max_documents="2"):
        resp = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs})
    assert resp.status_code == 202, resp.text
    settings = get_settings()
    queue = settings.queue_for("summarize")
    assert _queue_length(settings.broker_url, queue) == settings.dispatch_depth
    with new_session(get_settings()) as s:
        backlog = s.scalars(
            select(Unit.id).where(Unit.job_id == resp.json()["id"], Unit.dispatched_at.is_(None))
        ).all()
    assert len(backlog) == 300 - settings.dispatch_depth


def test_small_job_finishes_while_another_tenants_big_job_runs(
    api: Any, other_api: Any, private_queues: str
) -> None:
    """One worker; tenant A's 300-document job first, then tenant B's 8 documents."""
    with override(unit_max_documents="4"):
        big = api.post(
            "/v1/jobs",
            json={
                "tasks": ["summarize"],
                "documents": [{"custom_id": f"a{i}", "text": f"big job {i}"} for i in range(300)],
            },
        )
        assert big.status_code == 202, big.text
        worker = WorkerProcess(
            "summarize", env=fake_worker_env(private_queues, sleep=0.2), name="fair-one"
        ).wait_ready()
        try:
            deadline = time.monotonic() + 120
            while (
                api.get(f"/v1/jobs/{big.json()['id']}").json()["counts"]["summarize"]["succeeded"]
                < 8
            ):
                assert time.monotonic() < deadline, "the worker made no progress"
                time.sleep(0.1)
            small = other_api.post(
                "/v1/jobs",
                json={
                    "tasks": ["summarize"],
                    "documents": [{"custom_id": f"b{i}", "text": f"small {i}"} for i in range(8)],
                },
            )
            assert small.status_code == 202, small.text
            done = wait_for_job(other_api, small.json()["id"], timeout=120)
            a = api.get(f"/v1/jobs/{big.json()['id']}").json()
        finally:
            worker.stop()
    assert done["status"] == "completed", done
    assert a["status"] == "running", a  # B did not wait for A to finish
    assert a["counts"]["summarize"]["succeeded"] <= 150, a["counts"]  # nor for half of it
    # B's first unit waited for A's unit computing when B arrived, not also for the one
    # A's chain had claimed ahead (B's second unit then alternates with A's: fair share).
    with new_session(get_settings()) as s:
        arrived = s.scalar(select(Job.created_at).where(Job.id == small.json()["id"]))
        finished = s.scalar(
            select(func.min(Unit.finished_at)).where(Unit.job_id == small.json()["id"])
        )
        passed = s.scalars(
            select(Unit.id).where(
                Unit.job_id == big.json()["id"],
                Unit.finished_at > arrived,
                Unit.finished_at <= finished,
            )
        ).all()
    assert len(passed) <= 1, passed


def test_a_tenant_alone_uses_every_worker(api: Any, private_queues: str) -> None:
    with override(unit_max_documents="2"):
        env = fake_worker_env(private_queues, sleep=0.2)
        workers = [
            WorkerProcess("summarize", env=env, name=f"fair-fleet-{i}").wait_ready()
            for i in range(2)
        ]
        try:
            resp = api.post(
                "/v1/jobs",
                json={
                    "tasks": ["summarize"],
                    "documents": [{"custom_id": f"a{i}", "text": f"doc {i}"} for i in range(80)],
                },
            )
            assert resp.status_code == 202, resp.text
            job = wait_for_job(api, resp.json()["id"], timeout=180)
        finally:
            for w in workers:
                w.stop()
    assert job["status"] == "completed", job
    with new_session(get_settings()) as s:
        ran_on = set(s.scalars(select(Unit.worker).where(Unit.job_id == job["id"])))
    hosts = {name.split(":")[1] for name in ran_on if name}
    assert len(hosts) >= 2, ran_on  # both workers' processes ran units


def test_a_deep_backlog_is_read_only_as_far_as_the_lookahead(database: str) -> None:
    """A pick reads a job's next LOOKAHEAD_UNITS units at most, so its cost does not grow
    with the backlog; a job with fewer units is still counted whole and goes first."""
    settings = _settings(f"d{secrets.token_hex(3)}", unit_max_documents=1)
    tenant = f"t{secrets.token_hex(2)}"
    deep = _job(settings, tenant, fairshare.LOOKAHEAD_UNITS + 60)
    small = _job(settings, tenant, 3)
    queue = settings.queue_for("summarize")
    with new_session(get_settings()) as s:
        seen = {b.job_id: b for b in fairshare.backlog(s, queue)}
        first = list(
            s.scalars(
                select(Unit.est_tokens)
                .where(Unit.job_id == deep)
                .order_by(Unit.id)
                .limit(fairshare.LOOKAHEAD_UNITS)
            )
        )
        small_tokens = sum(s.scalars(select(Unit.est_tokens).where(Unit.job_id == small)))
        job_of = dict(
            s.execute(select(Unit.id, Unit.job_id).where(Unit.job_id.in_([deep, small]))).all()
        )
    assert (seen[deep].units, seen[deep].tokens) == (fairshare.LOOKAHEAD_UNITS, sum(first))
    assert (seen[small].units, seen[small].tokens) == (3, small_tokens)
    assert [job_of[u] for u in _pick(settings, 5)] == [small] * 3 + [deep] * 2


def test_a_cancelling_jobs_backlog_is_not_sent(database: str) -> None:
    """Its sweep closes it in batches (docbatch.worker.cancel); the dispatcher sending it
    meanwhile had every worker cancel it one unit at a time."""
    settings = _settings(f"x{secrets.token_hex(3)}", unit_max_documents=4)
    tenant = f"t{secrets.token_hex(2)}"
    doomed = _job(settings, tenant, 40)
    other = _job(settings, tenant, 400)
    with transaction(get_settings()) as s:
        s.get(Job, doomed).status = "cancelling"
    with new_session(get_settings()) as s:
        job_of = dict(
            s.execute(select(Unit.id, Unit.job_id).where(Unit.job_id.in_([doomed, other]))).all()
        )
    picked = _pick(settings, 6)
    assert len(picked) == 6 and {job_of.get(u) for u in picked} == {other}
