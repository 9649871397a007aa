"""Reading raw input into the I/O models (schema/models.py).

JSON is parsed here (with the nesting cap), the models do every check, and a pydantic
``ValidationError`` becomes the ``InputError`` the api answers with: the field as a
path (``documents[3].text``, ``tasks[0].labels[1]``), one sentence saying what is wrong,
and the NDJSON line when there is one. Example::

    job = validate_job({"tasks": ["tags"], "documents": [...]}, settings)
    doc = validate_document(json_line, settings, line=7)
"""

from __future__ import annotations

import json
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from docbatch.schema.errors import InputError
from docbatch.schema.models import (
    NAME_MAX_CHARS,
    BatchCreate,
    DocumentIn,
    JobCreate,
    ScheduleName,
    TaskList,
    TaskSpec,
)
from docbatch.schema.settings import Settings
from docbatch.schema.text_checks import depth_message

# A discriminated union puts the member's tag into error locations (tasks.0.tags.top_k).
_TASK_TAGS = frozenset(
    member.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for member in get_args(get_args(TaskSpec)[0])
)
_schedule_name: TypeAdapter[str] = TypeAdapter(ScheduleName)
_tasks_adapter: TypeAdapter[list[Any]] = TypeAdapter(TaskList)

# Messages for pydantic's own error types; our validators raise their own sentences.
_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
    "string_too_long": "is longer than {max_length} characters",
    "string_too_short": "is required and must be a non-empty string",
    "too_short": "must be a non-empty list",
}


def field_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    path = prefix
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(previous, int) and part in _TASK_TAGS:
            pass
        else:
            path = f"{path}.{part}" if path else str(part)
        previous = part
    return path


def input_error(exc: ValidationError, prefix: str = "", line: int | None = None) -> InputError:
    """The first error of ``exc`` as an InputError naming its field (under ``prefix``)."""
    err = exc.errors(include_url=False)[0]
    ctx = err.get("ctx") or {}
    field = field_path(err["loc"], prefix) + str(ctx.get("at", ""))
    template = _MESSAGES.get(err["type"])
    message = template.format(**ctx) if template else err["msg"]
    if err["type"] == "string_type" and field.endswith(".text"):
        message = "is required and must be a string"
    # A lone surrogate in a key would make the error itself unsendable as UTF-8 JSON.
    field, message = _sendable(field), _sendable(message)
    return InputError(field or prefix or "body", message, line=line)


def _sendable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _context(settings: Settings) -> dict[str, Any]:
    return {"settings": settings}


def validate_job(raw: Any, settings: Settings) -> JobCreate:
    """A whole JSON job body, or an NDJSON/multipart submission's options (no documents)."""
    if not isinstance(raw, dict):
        raise InputError("body", "must be a JSON object with tasks and documents")
    return _validate(JobCreate, raw, settings, "")  # type: ignore[return-value]


def validate_batch_create(raw: Any, settings: Settings) -> BatchCreate:
    """The body of ``POST /v1/batches``."""
    if not isinstance(raw, dict):
        raise InputError("body", "must be a JSON object")
    return _validate(BatchCreate, raw, settings, "")  # type: ignore[return-value]


def validate_tasks(raw: Any, settings: Settings) -> list[dict[str, Any]]:
    """The ``tasks`` field alone (schedules, ``docbatch run``): one params dict per task."""
    try:
        tasks = _tasks_adapter.validate_python(raw, context=_context(settings))
    except ValidationError as exc:
        raise input_error(exc, "tasks") from None
    return task_params(tasks)


def validate_schedule_name(raw: Any) -> str:
    if raw is None:
        raise InputError("name", f"is required: a string of 1 to {NAME_MAX_CHARS} characters")
    try:
        return _schedule_name.validate_python(raw, strict=True)
    except ValidationError as exc:
        raise input_error(exc, "name") from None


def task_params(tasks: list[Any]) -> list[dict[str, Any]]:
    """What a job stores per task: its parameters, with ``type``, defaults filled in."""
    return [task.model_dump(exclude_none=True) for task in tasks]


def validate_document(
    raw: Any, settings: Settings, *, index: int = 0, line: int | None = None
) -> DocumentIn:
    """One document; errors name ``documents[index]``, or ``document`` and the NDJSON line."""
    return validate_row(raw, settings, index=index, line=line)[0]


def validate_row(
    raw: Any, settings: Settings, *, index: int = 0, line: int | None = None
) -> tuple[DocumentIn, str | None]:
    """``validate_document`` and the metadata as ``json.dumps`` wrote it (None: none, or
    not encoded yet), for the COPY that stores the document."""
    if isinstance(raw, DocumentIn):
        return raw, None
    where = f"documents[{index}]" if line is None else "document"
    if not isinstance(raw, dict):
        raise InputError(where, "must be an object with custom_id and text", line=line)
    context: dict[str, Any] = {"settings": settings}
    try:
        doc = DocumentIn.model_validate(raw, context=context)
    except ValidationError as exc:
        raise input_error(exc, where, line) from None
    return doc, context.get("metadata_json")


def _validate(
    model: type[BaseModel], raw: Any, settings: Settings, where: str, line: int | None = None
) -> BaseModel:
    try:
        return model.model_validate(raw, context=_context(settings))
    except ValidationError as exc:
        raise input_error(exc, where, line) from None


def parse_json(
    data: bytes, settings: Settings, field: str, *, line: int | None = None, what: str
) -> Any:
    """``json.loads`` with errors as InputError; ``what`` starts the malformed-JSON message."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            field, f"is not valid UTF-8 (byte {exc.start}: {exc.reason})", line=line
        ) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(field, depth_message(settings.max_json_depth), line=line) from None
    except ValueError as exc:
        raise InputError(field, f"{what}: {exc}", line=line) from None
