"""The OpenAI Batch input checks that need no server: a request line and the create body."""

from __future__ import annotations

import io
import json

import pytest

from docbatch.domain.openai.files import _bounded_lines, _check_request_line
from docbatch.schema.errors import BatchApiError, InputError
from docbatch.schema.settings import Settings
from docbatch.schema.validation import validate_batch_create

pytestmark = pytest.mark.fast
SETTINGS = Settings()
GOOD = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}


def _refused(raw: bytes) -> BatchApiError:
    with pytest.raises(BatchApiError) as refused:
        _check_request_line(raw, 7, set(), SETTINGS)
    assert refused.value.line == 7 and "line 7" in refused.value.message
    return refused.value


def test_a_good_line_passes_and_a_repeated_custom_id_does_not():
    seen: set[str] = set()
    assert _check_request_line(json.dumps(GOOD).encode(), 1, seen, SETTINGS) == GOOD
    with pytest.raises(BatchApiError) as dup:
        _check_request_line(json.dumps(GOOD).encode(), 2, seen, SETTINGS)
    assert dup.value.code == "duplicate_custom_id"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"custom_id": "a\\ud800", "method": "POST", "url": "u", "body": {}}',
        b'{"custom_id": "a\xed\xa0\x80", "method": "POST", "url": "u", "body": {}}',
        b'{"custom_id": "a", "method": "POST", "url": "u", "body": {"user": "\\udfff"}}',
        b'{"custom_id": "a", "method": "POST", "url": "u", "body": {"temperature": NaN}}',
    ],
)
def test_what_cannot_be_sent_back_is_refused(raw):
    assert _refused(raw).code == "invalid_request"


def test_deep_nesting_is_refused_whether_or_not_json_can_parse_it():
    for depth in (40, 100_000):
        raw = b'{"custom_id": "a", "method": "POST", "url": "u", "body": {"x": '
        raw += b"[" * depth + b"]" * depth + b"}}"
        assert "DOCBATCH_MAX_JSON_DEPTH" in _refused(raw).message


def test_lines_are_read_at_most_limit_plus_one_bytes():
    stream = io.BytesIO(b"short\n" + b"x" * 1000 + b"\nend")
    assert [len(line) for line in _bounded_lines(stream, 100)][:2] == [6, 101]


def test_the_create_body_names_the_wrong_field():
    good = {"input_file_id": "file-1", "endpoint": "/v1/embeddings", "completion_window": "24h"}
    assert validate_batch_create(good, SETTINGS).completion_window == "24h"
    for body, field in [
        ({**good, "completion_window": ["24h"]}, "completion_window"),
        ({**good, "metadata": {"k": "\ud800"}}, "metadata.k"),
        ({**good, "metadata": {"k": 1}}, "metadata.k"),
        ({**good, "extra": True}, "extra"),
    ]:
        with pytest.raises(InputError) as bad:
            validate_batch_create(body, SETTINGS)
        assert bad.value.field == field, bad.value
    with pytest.raises(InputError) as bad:
        validate_batch_create({**good, "metadata": {"\udc00": "v"}}, SETTINGS)
    str(bad.value).encode("utf-8")  # the error itself can be sent as UTF-8
