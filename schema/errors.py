"""docbatch's exceptions, shared by the api, the worker and the CLI.

DocbatchError
├── InputError          bad request input: names the field, the document/line and the limit
│   ├── PayloadTooLarge       a body or NDJSON line over its byte limit (HTTP 413)
│   └── UnsupportedMediaType  a Content-Type the endpoint does not read (HTTP 415)
├── Unauthorized        no, malformed, unknown or revoked API key (HTTP 401)
├── Forbidden           a valid key that may not do this (a tenant key on /v1/admin: HTTP 403)
├── NotFound            no such job/schedule for this tenant (another tenant's is NotFound too)
├── Conflict            e.g. an Idempotency-Key reused with a different body
├── BatchApiError       a request of the OpenAI-compatible API refused, in OpenAI's shape
├── BatchLengthMismatch a handler's predict returned a different number of outputs than inputs
├── TransientError      infrastructure blip (database, broker): retry with backoff
└── PermanentError      this document cannot be processed: fail it with the reason
    └── ModelUnavailable    the model a task needs is not installed here
"""

from __future__ import annotations


class DocbatchError(Exception):
    """Base of every error docbatch raises on purpose."""


class InputError(DocbatchError):
    def __init__(self, field: str, message: str, *, line: int | None = None) -> None:
        self.field = field
        self.message = message
        self.line = line
        where = f" (line {line})" if line is not None else ""
        super().__init__(f"{field}{where}: {message}")

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"field": self.field, "message": self.message}
        if self.line is not None:
            body["line"] = self.line
        return body


class Unauthorized(DocbatchError):
    pass


class Forbidden(DocbatchError):
    pass


class NotFound(DocbatchError):
    pass


class Conflict(DocbatchError):
    pass


class BatchLengthMismatch(DocbatchError):
    """A handler bug: ``predict`` must return one output per input (the batch's rows fail,
    one by one, with this message naming both lengths)."""


class TransientError(DocbatchError):
    pass


class PermanentError(DocbatchError):
    pass


class ModelUnavailable(PermanentError):
    pass


class PayloadTooLarge(InputError):
    """The request body is over DOCBATCH_MAX_REQUEST_BYTES (HTTP 413)."""


class BatchApiError(DocbatchError):
    """A refused ``/v1/files`` or ``/v1/batches`` request, sent in OpenAI's error envelope
    (``{"error": {"message", "type", "param", "code", "line"}}``) so the ``openai`` client
    raises its usual ``BadRequestError`` with the message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        line: int | None = None,
    ) -> None:
        self.status, self.message, self.code, self.param, self.line = (
            status,
            message,
            code,
            param,
            line,
        )
        super().__init__(message)

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {
            "message": self.message,
            "type": "invalid_request_error",
            "param": self.param,
            "code": self.code,
        }
        if self.line is not None:
            body["line"] = self.line
        return body


class UnsupportedMediaType(InputError):
    """The request body is not a kind the endpoint reads (HTTP 415)."""
