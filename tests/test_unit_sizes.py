"""A deployment's own unit size (DOCBATCH_MODELS__<TASK>__UNIT_TOKENS): its units join the
job's neighbouring ranges up to that size, the other tasks keep DOCBATCH_UNIT_TOKENS, and
every document still gets exactly one result per task."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select

from docbatch.domain import jobs
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import new_session
from docbatch.schema.settings import Settings, get_settings
from docbatch.schema.tables import Document, JobTask, Result, Unit
from docbatch.worker.model_stage import ModelStage
from docbatch.worker.runner import UnitRunner
from tests.fakes import UpperHandler
from tests.fixtures import load_corpus


def _settings(own: int) -> Settings:
    base = get_settings()
    models = dict(base.models)
    models["summarize"] = base.model_for("summarize").model_copy(update={"unit_tokens": own})
    return base.model_copy(
        update={
            "queue_prefix": f"sizes-{secrets.token_hex(3)}",
            "unit_tokens": 600,
            "unit_max_documents": 12,
            "worker_overlap": "inline",
            "models": models,
        }
    )


def _job(settings: Settings, docs: list[dict]) -> tuple[str, dict[str, list[tuple[int, int]]]]:
    with unit_of_work(settings, publish=False) as s:
        new = jobs.create_job(
            s,
            settings,
            tenant="default",
            tasks=[{"type": "summarize"}, {"type": "translate", "target_lang": "de"}],
            documents=((d, None) for d in docs),
        )
        job_id = new.job.id
    with new_session(settings) as s:
        rows = s.execute(
            select(Unit.task, Unit.seq_lo, Unit.seq_hi).where(Unit.job_id == job_id)
        ).all()
    ranges: dict[str, list[tuple[int, int]]] = {}
    for task, lo, hi in rows:
        ranges.setdefault(task, []).append((lo, hi))
    return job_id, {t: sorted(r) for t, r in ranges.items()}


def _covers(ranges: list[tuple[int, int]], n: int) -> bool:
    seqs = [s for lo, hi in ranges for s in range(lo, hi + 1)]
    return sorted(seqs) == list(range(n))


def test_a_deployment_with_bigger_units_gets_fewer_of_them_and_every_result_once():
    docs = load_corpus("stdlib-docs.jsonl", 40)
    settings = _settings(own=2400)
    job_id, ranges = _job(settings, docs)
    shared, own = ranges["translate"], ranges["summarize"]
    assert _covers(shared, len(docs)) and _covers(own, len(docs))
    # About four shared units in one, never more documents than the cap.
    assert len(own) < len(shared) / 2, (own, shared)
    assert all(hi - lo + 1 <= settings.unit_max_documents for lo, hi in own)
    # Same job without the setting: the summarize units are the shared cut.
    _, plain = _job(_settings(own=0), docs)
    assert plain["summarize"] == plain["translate"] == shared

    # The bigger units run through the real runner (claim ahead, write and close) and
    # every document gets exactly one summarize result.
    handler = UpperHandler(settings.model_for("summarize"))
    handler.setup("cpu")
    runner = UnitRunner(ModelStage(handler, settings), settings)
    with new_session(settings) as s:
        first = s.scalar(
            select(func.min(Unit.id)).where(Unit.job_id == job_id, Unit.task == "summarize")
        )
    assert runner.run(int(first)) == "done"
    with new_session(settings) as s:
        done = s.execute(
            select(Result.document_id, func.count())
            .where(Result.job_id == job_id, Result.task == "summarize")
            .group_by(Result.document_id)
        ).all()
        documents = s.scalar(select(func.count()).where(Document.job_id == job_id))
        states = set(
            s.scalars(
                select(Unit.state).where(Unit.job_id == job_id, Unit.task == "summarize")
            ).all()
        )
        counts = {
            t.task: (t.total, t.succeeded)
            for t in s.scalars(select(JobTask).where(JobTask.job_id == job_id)).all()
        }
    assert len(done) == documents == len(docs)
    assert all(n == 1 for _, n in done)
    assert states == {"done"}
    assert counts["summarize"] == (len(docs), len(docs))
