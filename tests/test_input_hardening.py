"""Hostile input gets a clear 4xx and writes nothing: lone surrogates and NUL anywhere,
JSON nested thousands deep, oversized metadata, bodies and lines, loose types, wrong
Content-Types, invisible text, schedule names shaped like ids. Everything runs against
the real app and the run's Postgres (and Redis for "nothing queued")."""

from __future__ import annotations

import json

import pytest
import redis as redis_lib
from sqlalchemy import func, select

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Document, Job, Unit
from tests.conftest import servers

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


def _post_json(api, body: dict | str):
    # json.dumps escapes a lone surrogate as \ud800 (httpx's json= would refuse it).
    text = body if isinstance(body, str) else json.dumps(body)
    return api.post("/v1/jobs", content=text, headers={"Content-Type": "application/json"})


def _post_ndjson(api, lines: list[bytes], tasks: str = "tags", **params):
    return api.post(
        "/v1/jobs",
        params={"tasks": tasks, **params},
        content=b"\n".join(lines) + b"\n",
        headers={"Content-Type": "application/x-ndjson"},
    )


def _error(resp) -> dict:
    body = resp.json()
    assert "error" in body, body
    return body["error"]


def test_lone_surrogate_in_labels_is_422_and_nothing_is_queued(
    api, private_queues, no_rows_written
):
    queue = get_settings().queue_for("tags")
    broker = redis_lib.Redis.from_url(servers().broker_url)
    body = {"tasks": [{"type": "tags", "labels": ["ok", "\ud800"]}], "documents": [GOOD]}
    resp = _post_json(api, body)
    assert resp.status_code == 422, resp.text
    assert _error(resp)["field"] == "tasks[0].labels[1]"
    assert "UTF-8" in _error(resp)["message"]
    # NDJSON with the tasks in the query: the same rule
    tasks = json.dumps([{"type": "tags", "labels": ["\udfff"]}])
    resp = _post_ndjson(api, [json.dumps(GOOD).encode()], tasks=tasks)
    assert resp.status_code == 422 and _error(resp)["field"] == "tasks[0].labels[0]"
    assert broker.llen(queue) == 0, "a rejected job was queued"
    listed = api.get("/v1/jobs")
    assert listed.status_code == 200, listed.text


@pytest.mark.parametrize(
    "metadata",
    [
        {"k": "\ud800"},
        {"\udc00": "v"},
        {"k": "a\u0000b"},
        {"a\u0000": 1},
        {"outer": {"list": [1, {"deep": ["\udfff"]}]}},
        {"outer": [{"nul": "\u0000"}]},
    ],
)
def test_bad_strings_in_metadata_are_422(api, no_rows_written, metadata):
    doc = {**GOOD, "metadata": metadata}
    resp = _post_json(api, {"tasks": ["tags"], "documents": [doc]})
    assert resp.status_code == 422, resp.text
    assert _error(resp)["field"] == "documents[0].metadata"
    assert any(w in _error(resp)["message"] for w in ("NUL", "UTF-8")), resp.text
    second = json.dumps({**doc, "custom_id": "b"}).encode()
    resp = _post_ndjson(api, [json.dumps(GOOD).encode(), second])
    assert resp.status_code == 422, resp.text
    assert (_error(resp)["field"], _error(resp)["line"]) == ("document.metadata", 2)


def test_non_finite_numbers_in_metadata_are_422(api, no_rows_written):
    line = b'{"custom_id": "a", "text": "x", "metadata": {"score": NaN}}'
    resp = _post_ndjson(api, [line])
    assert resp.status_code == 422 and _error(resp)["field"] == "document.metadata"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_nested_ten_thousand_deep_is_a_4xx(api, no_rows_written):
    deep = _nested(10_000)
    # the whole body
    resp = _post_json(api, deep)
    assert resp.status_code == 422, resp.text
    assert "DOCBATCH_MAX_JSON_DEPTH" in _error(resp)["message"]
    # metadata in a JSON body
    doc = '{"custom_id": "a", "text": "x", "metadata": {"m": ' + deep + "}}"
    resp = _post_json(api, '{"tasks": ["tags"], "documents": [' + doc + "]}")
    assert resp.status_code == 422, resp.text
    assert "DOCBATCH_MAX_JSON_DEPTH" in _error(resp)["message"]
    # one NDJSON line
    line = ('{"custom_id": "b", "text": "x", "metadata": {"m": ' + deep + "}}").encode()
    resp = _post_ndjson(api, [json.dumps(GOOD).encode(), line])
    assert resp.status_code == 422, resp.text
    assert _error(resp)["line"] == 2 and "DOCBATCH_MAX_JSON_DEPTH" in _error(resp)["message"]
    # deep tasks in the query
    resp = _post_ndjson(api, [json.dumps(GOOD).encode()], tasks=_nested(10_000))
    assert resp.status_code == 422, resp.text


def test_metadata_deeper_than_the_setting_is_422(api, no_rows_written, limits):
    limits["MAX_JSON_DEPTH"] = "5"
    doc = {**GOOD, "metadata": {"a": [[[[["six"]]]]]}}
    resp = _post_json(api, {"tasks": ["tags"], "documents": [doc]})
    assert resp.status_code == 422
    assert _error(resp) == {
        "field": "documents[0].metadata",
        "message": "is nested deeper than 5 levels (DOCBATCH_MAX_JSON_DEPTH)",
    }


def test_metadata_has_a_size_limit(api, no_rows_written, limits):
    big = {**GOOD, "metadata": {"blob": "x" * 20_000}}
    resp = _post_ndjson(api, [json.dumps(big).encode()])
    assert resp.status_code == 422, resp.text
    err = _error(resp)
    assert (err["field"], err["line"]) == ("document.metadata", 1)
    assert "the limit is 16384 bytes (DOCBATCH_MAX_METADATA_BYTES)" in err["message"]

    limits["MAX_METADATA_BYTES"] = "100"
    doc = {**GOOD, "metadata": {"note": "é" * 50}}  # 100 bytes of text, 111 as JSON
    resp = _post_json(api, {"tasks": ["tags"], "documents": [doc]})
    assert resp.status_code == 422
    assert _error(resp)["message"] == (
        "is 111 bytes as JSON; the limit is 100 bytes (DOCBATCH_MAX_METADATA_BYTES)"
    )


def test_json_body_has_its_own_cap_below_the_ndjson_limit(api, private_queues, limits):
    settings = get_settings()
    assert settings.max_json_body_bytes * 50 <= settings.max_request_bytes
    limits["MAX_JSON_BODY_BYTES"] = "2000"
    docs = [{"custom_id": str(i), "text": "y" * 40} for i in range(60)]
    before = _rows()
    resp = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs})
    assert resp.status_code == 413, resp.text
    assert _error(resp)["field"] == "body"
    assert "over 2000 bytes (DOCBATCH_MAX_JSON_BODY_BYTES)" in _error(resp)["message"]
    assert "NDJSON" in _error(resp)["message"]
    assert _rows() == before
    # the same documents as NDJSON are fine
    resp = _post_ndjson(api, [json.dumps(d).encode() for d in docs], tasks="summarize")
    assert resp.status_code == 202, resp.text
    api.post(f"/v1/jobs/{resp.json()['id']}/cancel")


def test_over_long_ndjson_line_is_refused_with_its_number(api, no_rows_written, limits):
    limits["MAX_LINE_BYTES"] = "1000"
    short = json.dumps(GOOD).encode()
    long = json.dumps({"custom_id": "b", "text": "z" * 2000}).encode()
    resp = _post_ndjson(api, [short, short.replace(b'"a"', b'"c"'), long])
    assert resp.status_code == 413, resp.text
    err = _error(resp)
    assert (err["field"], err["line"]) == ("document", 3)
    assert "over 1000 bytes (DOCBATCH_MAX_LINE_BYTES)" in err["message"]
    # the last line, with no newline after it
    resp = api.post(
        "/v1/jobs",
        params={"tasks": "tags"},
        content=short + b"\n" + long,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert (resp.status_code, _error(resp)["line"]) == (413, 2)
    # a multipart upload's file is checked the same way
    resp = api.post(
        "/v1/jobs", data={"tasks": "tags"}, files={"file": ("d.jsonl", short + b"\n" + long)}
    )
    assert (resp.status_code, _error(resp)["line"]) == (413, 2), resp.text


@pytest.mark.parametrize("priority", ["9", " 9 ", 9.7, 9.0, True, None])
def test_priority_is_a_strict_integer(api, no_rows_written, priority):
    resp = _post_json(api, {"tasks": ["tags"], "documents": [GOOD], "priority": priority})
    assert resp.status_code == 422, resp.text
    assert _error(resp)["field"] == "priority"
    assert "must be an integer from 0 to 9" in _error(resp)["message"]


def test_query_options_convert_only_exact_forms(api, private_queues, no_rows_written):
    line = json.dumps(GOOD).encode()
    for bad in (" 9 ", "9.7", "nine", "9" * 5000):
        resp = _post_ndjson(api, [line], priority=bad)
        assert resp.status_code == 422 and _error(resp)["field"] == "priority", resp.text
    resp = _post_ndjson(api, [line], reuse_results="yes")
    assert resp.status_code == 422 and _error(resp)["field"] == "reuse_results"


def test_query_and_multipart_take_every_job_option(api, private_queues):
    line = json.dumps(GOOD).encode()
    resp = _post_ndjson(api, [line], priority="9", reuse_results="true", name="q")
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert (job["priority"], job["reuse_results"], job["name"]) == (9, True, "q")
    api.post(f"/v1/jobs/{job['id']}/cancel")
    resp = api.post(
        "/v1/jobs",
        files={"file": ("d.jsonl", line + b"\n")},
        data={"tasks": "tags", "priority": "3", "reuse_results": "true"},
    )
    assert resp.status_code == 202, resp.text
    assert (resp.json()["priority"], resp.json()["reuse_results"]) == (3, True)
    api.post(f"/v1/jobs/{resp.json()['id']}/cancel")


def test_openapi_lists_every_job_option(api):
    doc = api.get("/openapi.json").json()
    post = doc["paths"]["/v1/jobs"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    query = {p["name"] for p in post["parameters"] if p["in"] == "query"}
    options = set(doc["components"]["schemas"]["JobCreate"]["properties"]) - {"documents"}
    assert options == query == set(form) - {"file"}
    # Many ``file`` parts, one per file: a client generator must offer a list of files.
    assert form["file"]["type"] == "array"
    assert form["file"]["items"] == {"type": "string", "format": "binary"}
    priority = doc["components"]["schemas"]["JobCreate"]["properties"]["priority"]
    assert (priority["type"], priority["minimum"], priority["maximum"]) == ("integer", 0, 9)


@pytest.mark.parametrize(
    "content_type", ["application/xml", "application/x-www-form-urlencoded", None]
)
def test_unsupported_content_type_is_415(api, no_rows_written, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"tasks": ["tags"], "documents": [GOOD]}).encode()
    resp = api.post("/v1/jobs", content=body, headers=headers)
    assert resp.status_code == 415, resp.text
    assert _error(resp)["field"] == "Content-Type"
    assert (
        "application/json, application/x-ndjson or multipart/form-data" in (_error(resp)["message"])
    )


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"custom_id": "z", "text": "\u200b\u200c\u200d\ufeff"}, "documents[0].text"),
        ({"custom_id": "z", "text": "\u2060 \u200b\n"}, "documents[0].text"),
        ({"custom_id": "\u200b", "text": "visible"}, "documents[0].custom_id"),
        ({"custom_id": "\ufeff\u2063", "text": "visible"}, "documents[0].custom_id"),
    ],
)
def test_invisible_only_text_or_custom_id_is_422(api, no_rows_written, doc, field):
    resp = _post_json(api, {"tasks": ["embed"], "documents": [doc]})
    assert resp.status_code == 422, resp.text
    assert _error(resp)["field"] == field
    assert "invisible" in _error(resp)["message"]


def test_schedule_name_may_not_look_like_an_id(api, tmp_path, limits):
    # Folder schedules read only below <root>/<tenant>; the test tenant is "default".
    limits["SCHEDULE_FOLDER_ROOTS"] = json.dumps([str(tmp_path)])
    folder = tmp_path / "default" / "in"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    good = {
        "name": "first",
        "cron": "0 2 * * *",
        "source": {"type": "folder", "path": str(folder)},
        "tasks": ["summarize"],
        "enabled": False,
    }
    first = api.post("/v1/schedules", json=good)
    assert first.status_code == 201, first.text
    first_id = first.json()["id"]
    try:
        for name in (first_id, "sch_0123456789abcdef01234567", "sch_x"):
            resp = api.post("/v1/schedules", json={**good, "name": name})
            assert resp.status_code == 422, resp.text
            assert _error(resp)["field"] == "name"
            assert _error(resp)["message"] == (
                "must not start with 'sch_': that is how schedule ids look"
            )
        for name in ("\u200b", "a\u0000", 5):
            resp = api.post("/v1/schedules", json={**good, "name": name})
            assert resp.status_code == 422 and _error(resp)["field"] == "name", resp.text
        assert api.get(f"/v1/schedules/{first_id}").json()["name"] == "first"
    finally:
        api.delete(f"/v1/schedules/{first_id}")


def test_unusual_but_valid_metadata_is_kept_intact(api, private_queues):
    metadata = {
        "emoji": "😀 \U0001f680",
        "cjk": "東京",
        "looks_escaped": "a literal \\u0000 and \\ud800 as text",
        "nested": {"list": [1, 2.5, None, True, {"k": "NaN Infinity"}]},
    }
    doc = {**GOOD, "metadata": metadata}
    resp = _post_json(api, {"tasks": ["tags"], "documents": [doc]})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    results = api.get(f"/v1/jobs/{job_id}/results")
    assert results.status_code == 200
    assert json.loads(results.text.splitlines()[0])["metadata"] == metadata
    api.post(f"/v1/jobs/{job_id}/cancel")
