"""Fair share across tenants (docs/concepts/fair-share.md), measured on one embed worker
whose model is the sleep handler (a fixed time per batch: a stand-in for a GPU, so the
figures measure the dispatcher, not this machine's cores):

- tenant B's 8-document job: its latency (submit to completed) on an idle stack, and
  behind tenant A's big job (target: within 3x), with how many of A's units finished
  while B waited (the one computing when B arrived; one more if B's unit did not
  overtake the unit A's chain had claimed ahead);
- A's throughput (documents done per second) in the window while B's job runs, against
  the mean of the same length of window just before it and just after it (target: drops
  < 5 %; before-and-after cancels a drift of the machine's load, which on a shared box
  moves A's rate by more than B does). Each window's rate is
  taken from the first to the last of A's units finished in it (their ``finished_at``),
  whole units only: a unit of ~40 documents cut by a window's edge would otherwise move
  the figure by a few percent either way;
- tenants C (weight 3) and D (weight 1) both saturating: their shares of the estimated
  tokens done while both wait (target: 3:1 +- 10 %), measured until the window ends or
  either job has no unit left queued.

    python -m bench.run --only fairshare --fair-docs 20000
"""

from __future__ import annotations

import random
import time
from typing import Any

import httpx

from bench.cluster import ndjson_bytes, start_workers, stop_all

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "socket",
    "thread",
    "queue",
    "buffer",
    "parser",
    "module",
]


def _docs(prefix: str, n: int, words: int = 150, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"custom_id": f"{prefix}{i}", "text": " ".join(rng.choice(WORDS) for _ in range(words))}
        for i in range(n)
    ]


def _client(url: str, tenant: str, weight: float = 1.0) -> httpx.Client:
    from docbatch.domain.tenants import create_key, ensure_tenant
    from docbatch.schema.db import transaction
    from docbatch.schema.settings import get_settings

    with transaction(get_settings()) as s:
        ensure_tenant(s, tenant).weight = weight
        key = create_key(s, tenant).key
    return httpx.Client(base_url=url, timeout=600, headers={"Authorization": f"Bearer {key}"})


def _submit(client: httpx.Client, docs: list[dict[str, str]]) -> str:
    resp = client.post(
        "/v1/jobs",
        params={"tasks": "embed"},
        content=ndjson_bytes(docs),
        headers={"content-type": "application/x-ndjson"},
    )
    assert resp.status_code == 202, resp.text[:500]
    return str(resp.json()["id"])


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/jobs/{job_id}").json())


def _latency(client: httpx.Client, docs: list[dict[str, str]]) -> tuple[float, str]:
    started = time.monotonic()
    job_id = _submit(client, docs)
    while _job(client, job_id)["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.02)
    return time.monotonic() - started, job_id


def _done(client: httpx.Client, job_id: str) -> int:
    return int(_job(client, job_id)["counts"]["embed"]["succeeded"])


def _finished(job_id: str) -> list[tuple[float, int]]:
    """(finished_at as epoch seconds, documents) of the job's done units, by finish."""
    from sqlalchemy import select

    from docbatch.schema.db import new_session
    from docbatch.schema.settings import get_settings
    from docbatch.schema.tables import Unit

    with new_session(get_settings()) as s:
        rows = s.execute(
            select(Unit.finished_at, Unit.seq_hi - Unit.seq_lo + 1)
            .where(Unit.job_id == job_id, Unit.state == "done")
            .order_by(Unit.finished_at)
        ).all()
    return [(r[0].timestamp(), int(r[1])) for r in rows]


def _passed(b_job: str, a_job: str) -> int:
    """A's units finished while B's job waited (after B's job was created, up to its last
    unit): the unit computing when B arrived, and any A unit that went before B's."""
    from sqlalchemy import func, select

    from docbatch.schema.db import new_session
    from docbatch.schema.settings import get_settings
    from docbatch.schema.tables import Job, Unit

    with new_session(get_settings()) as s:
        created = s.scalar(select(Job.created_at).where(Job.id == b_job))
        done = s.scalar(select(func.max(Unit.finished_at)).where(Unit.job_id == b_job))
        return int(
            s.scalar(
                select(func.count())
                .select_from(Unit)
                .where(Unit.job_id == a_job, Unit.finished_at > created, Unit.finished_at <= done)
            )
            or 0
        )


def _unit_rate(finished: list[tuple[float, int]], start: float, end: float) -> tuple[float, int]:
    """Documents per second from the first to the last unit finished in [start, end]
    (the documents of the units after the first), and how many units that spans."""
    inside = [(t, n) for t, n in finished if start <= t <= end]
    if len(inside) < 2:
        return 0.0, len(inside)
    return sum(n for _, n in inside[1:]) / (inside[-1][0] - inside[0][0]), len(inside) - 1


def _queued(job_ids: dict[str, str]) -> dict[str, int]:
    """Units of each job still queued (its backlog and the units sent, not claimed)."""
    from sqlalchemy import func, select

    from docbatch.schema.db import new_session
    from docbatch.schema.settings import get_settings
    from docbatch.schema.tables import Unit

    with new_session(get_settings()) as s:
        return {
            tenant: int(
                s.scalar(
                    select(func.count())
                    .select_from(Unit)
                    .where(Unit.job_id == job_id, Unit.state == "queued")
                )
                or 0
            )
            for tenant, job_id in job_ids.items()
        }


def _tokens_done(job_ids: dict[str, str]) -> dict[str, int]:
    from sqlalchemy import func, select

    from docbatch.schema.db import new_session
    from docbatch.schema.settings import get_settings
    from docbatch.schema.tables import Unit

    with new_session(get_settings()) as s:
        return {
            tenant: int(
                s.scalar(
                    select(func.coalesce(func.sum(Unit.est_tokens), 0)).where(
                        Unit.job_id == job_id, Unit.state == "done"
                    )
                )
                or 0
            )
            for tenant, job_id in job_ids.items()
        }


def run(bench: Any, row: Any) -> None:
    args = bench.args
    extra = {
        **bench.worker_env,
        "DOCBATCH_TORCH_THREADS": "1",
        "DOCBATCH_MODELS__EMBED__HANDLER": "bench.handlers:SleepHandler",
        "DOCBATCH_BENCH_SLEEP": str(args.fair_sleep),
    }
    url = bench.api.url
    tenant_a, tenant_b = _client(url, "fair-a"), _client(url, "fair-b")
    workers = start_workers(bench.env, "embed", 1, extra, "fair")
    try:
        small = _docs("b", 8, seed=1)
        _latency(tenant_b, _docs("w", 8, seed=2))  # warm up: first claim, connections
        idle, _ = _latency(tenant_b, small)

        big = _submit(tenant_a, _docs("a", args.fair_docs))
        while _done(tenant_a, big) < 200:  # A in full flight
            time.sleep(0.1)
        window = max(args.fair_window, 3 * idle)
        opened = time.time()
        time.sleep(window)
        # A's rate over a window of the same length that starts when B is submitted.
        submitted, started = time.time(), time.monotonic()
        behind, b_job = _latency(tenant_b, _docs("b2", 8, seed=3))
        time.sleep(max(0.0, window - (time.monotonic() - started)))
        closed = time.time()
        a_status = _job(tenant_a, big)
        time.sleep(window)
        finished, passed = _finished(big), _passed(b_job, big)
        before, units_before = _unit_rate(finished, opened, submitted)
        during, units_during = _unit_rate(finished, submitted, closed)
        after, units_after = _unit_rate(finished, closed, time.time())
        tenant_a.post(f"/v1/jobs/{big}/cancel")
        ratio = behind / idle
        row(
            "fair share: B's 8 docs behind A's big job / idle",
            ratio,
            "<= 3",
            ratio <= 3,
            f"idle {idle:.2f}s, behind A's {args.fair_docs:,}-doc job {behind:.2f}s "
            f"(A {a_status['status']}, {a_status['counts']['embed']['succeeded']:,} done; "
            f"{passed} of A's units finished while B waited); "
            f"one worker, sleep handler {args.fair_sleep}s/batch",
        )
        around = (before + after) / 2
        drop = 1 - during / around if around else 0.0
        row(
            "fair share: A's throughput drop while B runs",
            100 * drop,
            "< 5 %",
            drop < 0.05,
            f"A {during:.1f} docs/s in the {window:.0f}s from B's submission ({units_during} "
            f"units) against {before:.1f} in the {window:.0f}s before ({units_before}) and "
            f"{after:.1f} in the {window:.0f}s after ({units_after}); unit boundary to unit "
            "boundary",
        )

        # Weights 3:1, both saturating: submitted together, measured while both wait.
        heavy, light = _client(url, "fair-c", 3.0), _client(url, "fair-d", 1.0)
        n = args.fair_docs // 4
        jobs = {
            "c": _submit(heavy, _docs("c", n, seed=4)),
            "d": _submit(light, _docs("d", n, seed=5)),
        }
        # Once both are running (A's cancel sweep, on the same worker, is over).
        while min(_tokens_done(jobs).values()) == 0:
            time.sleep(0.2)
        start_tokens, began = _tokens_done(jobs), time.monotonic()
        # Until the window ends or either job's backlog runs out: after that the other
        # tenant is alone and takes everything (work-conserving), which is no share.
        while time.monotonic() - began < args.fair_window and min(_queued(jobs).values()) > 0:
            time.sleep(0.5)
        end_tokens, measured = _tokens_done(jobs), time.monotonic() - began
        c_done, d_done = (end_tokens[k] - start_tokens[k] for k in ("c", "d"))
        for k, client in (("c", heavy), ("d", light)):
            client.post(f"/v1/jobs/{jobs[k]}/cancel")
        share = c_done / d_done if d_done else float("inf")
        row(
            "fair share: tokens C (weight 3) : D (weight 1)",
            share,
            "3 +- 10 %",
            2.7 <= share <= 3.3,
            f"estimated tokens done in {measured:.0f}s with both backlogged: "
            f"C {c_done:,}, D {d_done:,}",
        )
    finally:
        stop_all(workers)
        for c in (tenant_a, tenant_b):
            c.close()
