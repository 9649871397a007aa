"""Bad submissions get a 4xx naming the field (and NDJSON line); nothing is written."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Document, Job, Unit

GOOD_DOC = {"custom_id": "a", "text": "Some text."}


def _row_counts() -> tuple[int, int, int]:
    with new_session(get_settings()) as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Job, Document, Unit))


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"tasks": [{"type": "sing"}], "documents": [GOOD_DOC]}, "tasks[0].type", "unknown task"),
        ({"tasks": [], "documents": [GOOD_DOC]}, "tasks", "non-empty"),
        ({"tasks": ["tags"], "documents": []}, "documents", "empty"),
        (
            {"tasks": ["tags"], "documents": [GOOD_DOC, {"custom_id": "b"}]},
            "documents[1].text",
            "required",
        ),
        (
            {"tasks": ["tags"], "documents": [GOOD_DOC, {"custom_id": "c", "text": "   \n"}]},
            "documents[1].text",
            "whitespace",
        ),
        (
            {"tasks": ["tags"], "documents": [GOOD_DOC, dict(GOOD_DOC)]},
            "documents[1].custom_id",
            "duplicate custom_id 'a'",
        ),
        (
            {"tasks": ["tags"], "documents": [{"custom_id": "n", "text": "a\u0000b"}]},
            "documents[0].text",
            "NUL",
        ),
        (
            {"tasks": [{"type": "tags", "top_k": 0}], "documents": [GOOD_DOC]},
            "tasks[0].top_k",
            "greater than or equal to 1",
        ),
        (
            {"tasks": [{"type": "translate"}], "documents": [GOOD_DOC]},
            "tasks[0].target_lang",
            "required",
        ),
    ],
)
def test_bad_json_submission(api, body, field, words):
    before = _row_counts()
    resp = api.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["field"] == field
    assert words in error["message"]
    assert _row_counts() == before


def test_malformed_ndjson_line_is_named_and_nothing_written(api):
    before = _row_counts()
    body = (
        b'{"custom_id": "x1", "text": "fine"}\n'
        b'{"custom_id": "x2", "text": "fine too"}\n'
        b'{"custom_id": "x3", "text": \n'
    )
    resp = api.post(
        "/v1/jobs?tasks=tags", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["line"] == 3
    assert "malformed JSON" in resp.json()["error"]["message"]
    assert _row_counts() == before


def test_ndjson_duplicate_custom_id_names_the_line(api):
    before = _row_counts()
    body = b'{"custom_id": "d", "text": "one"}\n\n{"custom_id": "d", "text": "two"}\n'
    resp = api.post(
        "/v1/jobs?tasks=embed", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert resp.status_code == 422
    assert resp.json()["error"] == {
        "field": "document.custom_id",
        "message": "duplicate custom_id 'd'",
        "line": 3,
    }
    assert _row_counts() == before


def _lines(n: int, repeat: dict[int, int] | None = None) -> bytes:
    """``n`` NDJSON documents; line ``k`` of ``repeat`` reuses line ``repeat[k]``'s custom_id."""
    out = []
    for line in range(1, n + 1):
        of = (repeat or {}).get(line, line)
        out.append(f'{{"custom_id": "c{of}", "text": "document {line}"}}')
    return ("\n".join(out) + "\n").encode()


@pytest.mark.parametrize(
    ("repeat", "line"),
    [
        ({2600: 7}, 2600),  # of a document written in an earlier batch
        ({2600: 2100}, 2600),  # of one in the same batch, not yet written
        ({1500: 3, 2600: 7}, 1500),  # two: the first is named
    ],
)
def test_a_duplicate_custom_id_past_the_first_batch_names_its_line(api, repeat, line):
    # Past INSERT_BATCH (2000) documents a repeat is found by the table's unique key, not
    # by a set of every id held in the api; the answer is the same.
    before = _row_counts()
    resp = api.post(
        "/v1/jobs?tasks=embed",
        content=_lines(3000, repeat),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == {
        "field": "document.custom_id",
        "message": f"duplicate custom_id 'c{repeat[line]}'",
        "line": line,
    }
    assert _row_counts() == before


def test_a_duplicate_before_a_malformed_line_is_the_error_named(api):
    # Rows are written a batch at a time, so the repeat at line 3 is found only when a
    # later line fails; it came first, so it is the one reported.
    body = _lines(9, {3: 1}) + b'{"custom_id": "broken", "text": \n'
    resp = api.post(
        "/v1/jobs?tasks=embed", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert resp.status_code == 422
    assert resp.json()["error"] == {
        "field": "document.custom_id",
        "message": "duplicate custom_id 'c1'",
        "line": 3,
    }


def test_a_duplicate_in_a_big_json_body_names_its_index(api):
    docs = [{"custom_id": f"j{i}", "text": f"document {i}"} for i in range(2500)]
    docs[2300]["custom_id"] = "j4"
    resp = api.post("/v1/jobs", json={"tasks": ["embed"], "documents": docs})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert (error["field"], error["message"]) == (
        "documents[2300].custom_id",
        "duplicate custom_id 'j4'",
    )


def test_ndjson_without_tasks_parameter(api):
    resp = api.post(
        "/v1/jobs",
        content=b'{"custom_id": "d", "text": "one"}\n',
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "tasks"


def test_unknown_job_is_404(api):
    assert api.get("/v1/jobs/job_doesnotexist").status_code == 404
    assert api.get("/v1/jobs/job_doesnotexist/results").status_code == 404
    assert api.post("/v1/jobs/job_doesnotexist/cancel").status_code == 404


def test_ndjson_submission_is_accepted(api):
    body = b'{"custom_id": "n1", "text": "alpha."}\n{"custom_id": "n2", "text": "beta."}\n'
    resp = api.post(
        '/v1/jobs?tasks=[{"type":"tags","labels":["x","y"]}]&name=nd',
        content=body,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["documents"] == 2 and job["name"] == "nd"
    assert job["tasks"]["tags"]["labels"] == ["x", "y"]
    assert job["counts"]["tags"]["total"] == 2
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
