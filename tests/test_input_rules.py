"""The input rules on their own, with no server: what a job's tasks and documents may
hold (schema/validation.py, schema/models.py) and the string and JSON checks they share
(schema/text_checks.py). The api's answers to the same inputs: test_validation.py."""

from __future__ import annotations

import pytest

from docbatch.schema.errors import InputError
from docbatch.schema.settings import Settings
from docbatch.schema.text_checks import json_problem, string_problem, template_problem
from docbatch.schema.validation import validate_document, validate_job, validate_tasks

pytestmark = pytest.mark.fast

SETTINGS = Settings(max_labels_per_task=3, max_label_chars=10, max_question_chars=20)


def _refusal(call, *args) -> InputError:  # noqa: ANN001, ANN002
    with pytest.raises(InputError) as caught:
        call(*args)
    return caught.value


@pytest.mark.parametrize(
    ("tasks", "field", "words"),
    [
        ([{"type": "tags", "labels": ["a", "b", "c", "d"]}], "tasks[0].labels", "limit is 3"),
        ([{"type": "tags", "labels": ["a" * 11]}], "tasks[0].labels", "MAX_LABEL_CHARS"),
        ([{"type": "ask", "questions": ["q" * 21]}], "tasks[0].questions", "MAX_QUESTION_CHARS"),
        ([{"type": "classify", "hypothesis_template": "{:>9}{}"}], "tasks[0].hyp", "{}"),
        (["nonsense"], "tasks[0]", ""),
    ],
)
def test_bad_tasks_name_the_field_and_the_setting(tasks, field, words):
    error = _refusal(validate_tasks, tasks, SETTINGS)
    assert error.field.startswith(field), error
    assert words in error.message, error


def test_good_tasks_get_their_defaults():
    tasks = validate_tasks(["tags", {"type": "classify", "labels": ["a"]}], SETTINGS)
    assert tasks[0]["type"] == "tags" and tasks[0]["top_k"] == 5
    assert tasks[1]["hypothesis_template"] == "This example is {}."


def test_a_job_needs_an_object_and_a_document_its_fields():
    assert _refusal(validate_job, ["tags"], SETTINGS).field == "body"
    error = _refusal(validate_document, {"custom_id": "a", "text": "x\x00y"}, SETTINGS)
    assert error.field == "documents[0].text" and "NUL" in error.message


@pytest.mark.parametrize(
    ("template", "ok"),
    [
        ("This example is {}.", True),
        ("{{literal}} and {}", True),
        ("{:>999999999}{}", False),
        ("{0.__class__}{}", False),
        ("{}{}", False),
        ("no slot", False),
        ("{!r}", False),
        ("{0}", False),
        ("a lone { and {}", False),
    ],
)
def test_a_label_template_holds_one_bare_slot_and_nothing_else(template, ok):
    assert (template_problem(template) is None) is ok, template_problem(template)


def test_strings_and_json_postgres_cannot_keep_are_named():
    assert string_problem("fine") is None
    assert "NUL" in (string_problem("a\x00") or "")
    assert "surrogate" in (string_problem("\ud800") or "")
    assert "deeper than 3" in (json_problem([[[[1]]]], 3) or "")
    assert "JSON cannot represent" in (json_problem({"x": float("nan")}, 8) or "")
    assert json_problem({"ok": [1, "two"]}, 8) is None
