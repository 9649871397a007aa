"""Bad input: a 4xx naming the field, the document (or NDJSON line) and the limit, and no
rows written. No workers needed: every request here is rejected before commit."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Document, Job, Unit

GOOD = {"custom_id": "a", "text": "Some text."}


def _rows() -> tuple[int, int, int]:
    with new_session(get_settings()) as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(t)) for t in (Job, Document, Unit)
        )


@pytest.fixture
def no_rows_written():
    before = _rows()
    yield
    assert _rows() == before, "a rejected request left rows behind"


def _error(resp) -> dict:
    body = resp.json()
    assert "error" in body, body
    return body["error"]


def _json(api, tasks, documents, **extra):
    return api.post("/v1/jobs", json={"tasks": tasks, "documents": documents, **extra})


def _ndjson(api, lines: list[bytes], tasks="summarize", **params):
    return api.post(
        "/v1/jobs",
        params={"tasks": tasks, **params},
        content=b"\n".join(lines) + b"\n",
        headers={"Content-Type": "application/x-ndjson"},
    )


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        ({"custom_id": "n", "text": "before\u0000after"}, "documents[1].text", "NUL character"),
        ({"custom_id": "e", "text": ""}, "documents[1].text", "empty or whitespace only"),
        ({"custom_id": "w", "text": " \n\t "}, "documents[1].text", "empty or whitespace only"),
        ({"custom_id": "s", "text": "lone \ud800 surrogate"}, "documents[1].text", "UTF-8"),
        ({"custom_id": "", "text": "x"}, "documents[1].custom_id", "non-empty string"),
        ({"custom_id": "x\u0000", "text": "x"}, "documents[1].custom_id", "NUL"),
        ({"custom_id": "a", "text": "dup"}, "documents[1].custom_id", "duplicate custom_id 'a'"),
        ({"custom_id": "m", "text": "x", "meta": 1}, "documents[1].meta", "unknown field"),
        ({"custom_id": "t", "text": 5}, "documents[1].text", "must be a string"),
    ],
)
def test_bad_document_in_json_body(api, no_rows_written, doc, field, message):
    # json= would refuse the lone surrogate, so encode by hand (ensure_ascii escapes it).
    body = json.dumps({"tasks": ["summarize"], "documents": [GOOD, doc]})
    resp = api.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    err = _error(resp)
    assert err["field"] == field
    assert message in err["message"]


def test_bad_lines_in_ndjson_name_the_line(api, no_rows_written):
    good = json.dumps(GOOD).encode()
    resp = _ndjson(api, [good, b'{"custom_id": "b", "text": "caf\xe9"}'])
    assert resp.status_code == 422
    assert _error(resp) == {
        "field": "document",
        "message": _error(resp)["message"],
        "line": 2,
    }
    assert "not valid UTF-8" in _error(resp)["message"]

    resp = _ndjson(api, [good, b"", b'{"custom_id": "a", "text": "again"}'])
    err = _error(resp)
    assert (resp.status_code, err["line"], err["field"]) == (422, 3, "document.custom_id")
    assert "duplicate custom_id 'a'" in err["message"]

    resp = _ndjson(api, [good, b'{"custom_id": "b", "text": "x\\u0000y"}'])
    err = _error(resp)
    assert (resp.status_code, err["line"], err["field"]) == (422, 2, "document.text")
    assert "NUL" in err["message"]

    resp = _ndjson(api, [good, b'{"custom_id": "b", "text": "   "}'])
    assert (resp.status_code, _error(resp)["line"]) == (422, 2)

    resp = _ndjson(api, [good, b'{"custom_id": "b", "text": '])
    err = _error(resp)
    assert (resp.status_code, err["line"]) == (422, 2)
    assert "malformed JSON" in err["message"]


def test_json_body_that_is_not_utf8(api, no_rows_written):
    body = b'{"tasks": ["tags"], "documents": [{"custom_id": "a", "text": "caf\xe9"}]}'
    resp = api.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert _error(resp)["field"] == "body"
    assert "not valid UTF-8" in _error(resp)["message"]


@pytest.mark.parametrize(
    ("tasks", "field", "message"),
    [
        # The list grows with the tasks; it names them in order (generate among them).
        (["nope"], "tasks[0].type", "unknown task 'nope'; known tasks: "),
        ([{"type": "translate", "target_lang": "xx"}], "tasks[0].target_lang", "unknown language"),
        (
            [{"type": "translate", "target_lang": "klingon"}],
            "tasks[0].target_lang",
            "is not a language code; use an ISO 639-1 code",
        ),
        (
            [{"type": "translate", "target_lang": "de", "source_lang": "q1"}],
            "tasks[0].source_lang",
            "not a language code",
        ),
        (["tags", "tags"], "tasks[1].type", "listed twice"),
        ([], "tasks", "non-empty list"),
        ([{"type": "tags", "top_k": 0}], "tasks[0].top_k", "greater than or equal to 1"),
    ],
)
def test_bad_tasks(api, no_rows_written, tasks, field, message):
    resp = _json(api, tasks, [GOOD])
    assert resp.status_code == 422, resp.text
    assert _error(resp)["field"] == field
    assert message in _error(resp)["message"]


def test_plausible_language_codes_are_accepted(api):
    from docbatch.schema.languages import check_language

    for code in ("de", "pt-BR", "zh-Hans", "deu", "es_419"):
        assert check_language(code) is None, code


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("webhook_url", "ftp://example.com/hook", "must be an http:// or https:// URL"),
        ("webhook_url", "http://", "must be an http:// or https:// URL"),
        ("priority", 12, "integer from 0 to 9"),
        ("name", "x\u0000", "NUL"),
        ("colour", "red", "unknown field"),
    ],
)
def test_bad_job_fields(api, no_rows_written, field, value, message):
    resp = _json(api, ["tags"], [GOOD], **{field: value})
    assert resp.status_code == 422
    assert _error(resp)["field"] == field
    assert message in _error(resp)["message"]


def test_limits_name_the_setting(api, no_rows_written, limits):
    limits["MAX_LABELS_PER_TASK"] = "3"
    resp = _json(api, [{"type": "tags", "labels": ["a", "b", "c", "d"]}], [GOOD])
    assert resp.status_code == 422
    assert _error(resp)["field"] == "tasks[0].labels"
    assert "4 labels; the limit is 3 (DOCBATCH_MAX_LABELS_PER_TASK)" in _error(resp)["message"]

    limits["MAX_DOCUMENTS_PER_JOB"] = "5"
    docs = [{"custom_id": str(i), "text": "x"} for i in range(6)]
    resp = _json(api, ["tags"], docs)
    assert resp.status_code == 422
    assert "the limit is 5 (DOCBATCH_MAX_DOCUMENTS_PER_JOB)" in _error(resp)["message"]
    resp = _ndjson(api, [json.dumps(d).encode() for d in docs])
    assert (resp.status_code, _error(resp)["line"]) == (422, 6)
    assert "DOCBATCH_MAX_DOCUMENTS_PER_JOB" in _error(resp)["message"]

    limits["MAX_DOCUMENT_BYTES"] = "100"
    big = {"custom_id": "big", "text": "é" * 60}  # 120 bytes in UTF-8
    resp = _json(api, ["tags"], [GOOD, big])
    assert resp.status_code == 422
    err = _error(resp)
    assert err["field"] == "documents[1].text"
    assert (
        "'big' is 120 bytes; the limit is 100 bytes (DOCBATCH_MAX_DOCUMENT_BYTES)"
        in (err["message"])
    )

    limits["MAX_REQUEST_BYTES"] = "1000"
    resp = _ndjson(
        api, [json.dumps({"custom_id": str(i), "text": "y" * 40}).encode() for i in range(30)]
    )
    assert resp.status_code == 413
    assert _error(resp)["field"] == "body"
    assert "over 1000 bytes (DOCBATCH_MAX_REQUEST_BYTES)" in _error(resp)["message"]


def test_empty_submissions(api, no_rows_written):
    resp = _json(api, ["tags"], [])
    assert resp.status_code == 422 and _error(resp)["field"] == "documents"
    resp = _ndjson(api, [b"", b"  "])
    assert resp.status_code == 422 and "at least one document" in _error(resp)["message"]
    resp = _ndjson(api, [json.dumps(GOOD).encode()], tasks="")
    assert resp.status_code == 422 and _error(resp)["field"] == "tasks"


def test_multipart_file_upload(api, private_queues):
    lines = b"".join(
        json.dumps({"custom_id": str(i), "text": f"doc {i}"}).encode() + b"\n" for i in range(7)
    )
    resp = api.post(
        "/v1/jobs",
        files={"file": ("docs.jsonl", lines, "application/x-ndjson")},
        data={"tasks": "summarize,tags", "name": "uploaded"},
    )
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert (job["documents"], job["name"], sorted(job["tasks"])) == (
        7,
        "uploaded",
        ["summarize", "tags"],
    )
    api.post(f"/v1/jobs/{job['id']}/cancel")


def test_bad_multipart_uploads(api, no_rows_written):
    resp = api.post("/v1/jobs", data={"tasks": "tags"}, files={"other": ("x", b"{}")})
    assert resp.status_code == 422 and _error(resp)["field"] == "file"
    bad = b'{"custom_id": "a", "text": "ok"}\n{"custom_id": "a", "text": "dup"}\n'
    resp = api.post("/v1/jobs", data={"tasks": "tags"}, files={"file": ("d.jsonl", bad)})
    err = _error(resp)
    assert (resp.status_code, err["line"], err["field"]) == (422, 2, "document.custom_id")
