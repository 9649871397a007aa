"""Result reuse with the real default handlers (real workers, models, Postgres and Redis):
a second job over the same documents copies every result instead of computing it.

The model a result records and the model reuse looks for come from one function
(``Handler.result_model``); a handler whose recorded model differs from its configured
one (extractive summaries, translation per language pair) must still be reused.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures import WorkerProcess, load_corpus, read_ndjson, wait_for_job
from tests.seq2seq_helpers import greedy_env, own_prefix, queue_prefix
from tests.tiny_models import tiny_models  # noqa: F401 - session fixture

DOCS = 6


def _docs() -> list[dict[str, Any]]:
    # A marker of this call: other tests in the session may have run the same corpus texts
    # with the same tasks, and the first job must find nothing to reuse.
    marker = secrets.token_hex(4)
    return [
        {"custom_id": d["custom_id"], "text": f"{d['text'][:1500]} ({marker})"}
        for d in load_corpus("stdlib-docs.jsonl", DOCS)
    ]


def _results(api, job_id: str) -> dict[str, dict[str, Any]]:  # noqa: ANN001
    """custom_id -> task -> (status, output without the reuse marker, model)."""
    out: dict[str, dict[str, Any]] = {}
    for line in read_ndjson(api.get(f"/v1/jobs/{job_id}/results")):
        per_task = {}
        for task, r in line["results"].items():
            output = {k: v for k, v in (r.get("output") or {}).items() if k != "reused_from"}
            per_task[task] = (r["status"], output, r.get("model"))
        out[line["custom_id"]] = per_task
    return out


def _run_twice(api, tasks: list[dict[str, Any]]) -> None:  # noqa: ANN001
    docs = _docs()
    jobs = []
    for _ in range(2):
        resp = api.post("/v1/jobs", json={"tasks": tasks, "documents": docs, "reuse_results": True})
        assert resp.status_code == 202, resp.text
        job = wait_for_job(api, resp.json()["id"], timeout=600)
        assert job["status"] == "completed", job
        jobs.append(job)
    first, second = jobs
    for task in (t["type"] for t in tasks):
        assert first["counts"][task]["reused"] == 0
        counts = second["counts"][task]
        assert (counts["reused"], counts["total"]) == (DOCS, DOCS), (task, counts)
        assert counts["chunks"] == 0, f"{task}: nothing should have run on the model"
    before, after = _results(api, first["id"]), _results(api, second["id"])
    assert before == after
    assert all(r[0] == "succeeded" for per_task in after.values() for r in per_task.values())


def test_reuse_with_the_default_embed_tags_and_summarize_handlers(api, workers):
    tasks = [
        {"type": "embed"},
        {"type": "tags", "labels": ["files", "networking", "text processing"]},
        {"type": "summarize"},  # the extractive default: MiniLM, not the abstractive model
    ]
    _run_twice(api, tasks)


@pytest.fixture(scope="module")
def marian_prefix(tiny_models) -> Iterator[str]:  # noqa: F811
    prefix = own_prefix("reuse-marian")
    worker = WorkerProcess(
        "translate",
        env={
            "DOCBATCH_QUEUE_PREFIX": prefix,
            "DOCBATCH_MODELS__TRANSLATE__MODEL": tiny_models["marian_template"],
            **greedy_env("translate"),
        },
        name="reuse-marian",
    ).wait_ready()
    yield prefix
    worker.stop()


def test_reuse_with_the_translate_handler(api, marian_prefix):
    with queue_prefix(marian_prefix):
        _run_twice(api, [{"type": "translate", "target_lang": "de"}])  # source detected
