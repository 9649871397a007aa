"""The NDJSON results stream passes stored JSON through as text: the bytes must stay what
encoding each document's result dict with ``json.dumps(..., ensure_ascii=False)`` gives."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from docbatch.schema.settings import get_settings

VECS = np.array([[0.1, -0.25, 1 / 3], [2.0, 0.5, -1e-8]], dtype="<f4")

# custom_id, metadata, {task: (status, output, vectors, error, model_id, revision, params)}
DOCS: list[tuple[str, Any, dict[str, tuple[Any, ...]]]] = [
    (
        "plain",
        {"lang": "de", "note": "café ✓"},
        {
            "embed": ("succeeded", {"dim": 3, "chunks": 1}, VECS, None, "m/embed", "abc", {}),
            "summarize": (
                "succeeded",
                {"summary": "Straße", "score": 0.1234567891, "n": 3, "x": [1, 2.5, None, True]},
                None,
                None,
                "m/sum",
                "main",
                {"method": "extractive", "ratio": 0.2},
            ),
        },
    ),
    (
        'quote"and\\back',
        None,
        {"embed": ("failed", None, None, 'boom "quoted"\nline two', None, None, None)},
    ),
    (
        "empty-meta",
        {},
        {
            "embed": ("succeeded", None, None, None, None, None, None),
            "summarize": ("cancelled", None, None, None, None, None, None),
        },
    ),
    (
        "ünïcode-😀",
        {"path": "C:\\users\\x", "ctl": "a\x01b\u2028c"},
        {
            "embed": ("succeeded", {"dim": 3}, VECS[:1], None, "m/embed", "abc", {"k": "ü"}),
            "summarize": (
                "succeeded",
                {"summary": "emoji 😀 and \\u0041 literally", "path": "C:\\users"},
                None,
                None,
                "m/sum",
                None,
                {},
            ),
        },
    ),
    ("no-results", {"n": 1}, {}),
]


@pytest.fixture(scope="module")
def stored_job(api_key: str) -> str:
    from docbatch.schema.db import transaction
    from docbatch.schema.tables import Document, Job, JobTask, Result

    with transaction(get_settings()) as s:
        job = Job(tenant="default", name="stream-bytes", document_count=len(DOCS))
        s.add(job)
        s.flush()
        for task in ("embed", "summarize"):
            s.add(JobTask(job_id=job.id, task=task, params={}, total=len(DOCS)))
        for seq, (custom_id, meta, results) in enumerate(DOCS):
            doc = Document(
                job_id=job.id, seq=seq, custom_id=custom_id, text="t", meta=meta, content_hash="h"
            )
            s.add(doc)
            s.flush()
            for task, (status, output, vecs, error, model_id, rev, params) in results.items():
                s.add(
                    Result(
                        job_id=job.id,
                        document_id=doc.id,
                        task=task,
                        status=status,
                        output=output,
                        vectors=None if vecs is None else vecs.tobytes(),
                        error=error,
                        model_id=model_id,
                        model_revision=rev,
                        params=params,
                    )
                )
        return job.id


def _reference(job_id: str, tasks: list[str], **kw: Any) -> list[str]:
    from docbatch.domain.results import iter_document_results

    return [
        json.dumps(d, ensure_ascii=False)
        for d in iter_document_results(job_id, tasks, settings=get_settings(), **kw)
    ]


@pytest.mark.parametrize("page_size", [1, 2, 1000])
@pytest.mark.parametrize("vectors", ["floats", "base64"])
def test_stream_lines_equal_dict_encoding(stored_job: str, page_size: int, vectors: str) -> None:
    from docbatch.domain.results import iter_result_pages

    tasks = ["embed", "summarize"]
    want = _reference(stored_job, tasks, page_size=page_size, vectors=vectors)
    got = [
        line
        for page in iter_result_pages(
            stored_job, tasks, page_size=page_size, vectors=vectors, settings=get_settings()
        )
        for line in page
    ]
    assert got == want
    assert len(got) == len(DOCS)
    failed = [
        line
        for page in iter_result_pages(
            stored_job, tasks, only_failed=True, page_size=page_size, settings=get_settings()
        )
        for line in page
    ]
    assert failed == _reference(stored_job, tasks, only_failed=True, page_size=page_size)
    assert [json.loads(x)["custom_id"] for x in failed] == ['quote"and\\back']


def test_results_endpoint_bytes(api: Any, stored_job: str) -> None:
    from docbatch.api.routers.jobs import _task_names
    from docbatch.schema.db import new_session

    with new_session(get_settings()) as s:
        tasks = _task_names(s, stored_job)
    for vectors in ("floats", "base64"):
        resp = api.get(f"/v1/jobs/{stored_job}/results", params={"vectors": vectors})
        assert resp.status_code == 200
        want = "".join(line + "\n" for line in _reference(stored_job, tasks, vectors=vectors))
        assert resp.content == want.encode()
    # split("\n"), not splitlines(): U+2028 inside a string is not a line break in NDJSON.
    body = api.get(f"/v1/jobs/{stored_job}/results").text
    lines = [json.loads(x) for x in body.split("\n") if x]
    assert lines[3]["custom_id"] == "ünïcode-😀"
    assert lines[3]["metadata"] == DOCS[3][1]
    assert lines[0]["results"]["summarize"]["output"] == DOCS[0][2]["summarize"][1]
    pending = {"status": "pending"}
    assert lines[4]["results"] == {"embed": pending, "summarize": pending}
    assert "metadata" not in lines[1] and "metadata" not in lines[2]
    errors = api.get(f"/v1/jobs/{stored_job}/errors", params={"limit": 1}).text.split("\n")[:-1]
    assert [json.loads(x)["results"]["embed"]["error"] for x in errors] == [
        'boom "quoted"\nline two'
    ]
