"""docbatch's exceptions, shared by the api, the worker and the CLI.

DocbatchError                    (HTTP status: the class's ``status``)
├── InputError          422  bad request input: names the field, the document/line and the limit
│   ├── PayloadTooLarge       413  a body or NDJSON line over its byte limit
│   └── UnsupportedMediaType  415  a Content-Type the endpoint does not read
├── Unauthorized        401  no, malformed, unknown or revoked API key
├── Forbidden           403  a valid key that may not do this (a tenant key on /v1/admin)
├── NotFound            404  no such job/schedule for this tenant (another tenant's too)
├── Conflict            409  e.g. an Idempotency-Key reused with a different body
├── QuotaExceeded       429  over a tenant quota: names the limit, its value and the use
├── BatchApiError       4xx  a request of the OpenAI-compatible API refused, in OpenAI's shape
├── BatchLengthMismatch      a handler's predict returned another number of outputs than inputs
└── PermanentError           this document cannot be processed: fail it with the reason
    └── ModelUnavailable     the model a task needs is not installed here

The api turns any of them with a status below 500 into that response, in one handler
(api/app.py): ``{"detail", "error"?}``, or OpenAI's error envelope on ``/v1/files`` and
``/v1/batches``. The rest are the worker's: a document's failure, never an HTTP answer.
What is worth trying again (a lost connection, a deadlock) is the driver's and broker's
own exceptions, classified in one place (``docbatch.domain.retry.is_transient``).
"""

from __future__ import annotations


class DocbatchError(Exception):
    """Base of every error docbatch raises on purpose."""

    # The HTTP status the api answers with; 500: not an answer (the api lets it propagate).
    status: int = 500
    # Extra response headers, and the ``code`` of OpenAI's error envelope.
    headers: dict[str, str] = {}
    openai_code: str | None = None


class InputError(DocbatchError):
    status = 422

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
    status = 401
    headers = {"WWW-Authenticate": "Bearer"}
    openai_code = "invalid_api_key"


class Forbidden(DocbatchError):
    status = 403


class NotFound(DocbatchError):
    status = 404


class Conflict(DocbatchError):
    status = 409


class QuotaExceeded(DocbatchError):
    """A submission would take the tenant over one of its quotas (docbatch.domain.quotas);
    nothing of it is written. The api answers 429 with ``Retry-After`` and a body naming
    the limit, its value, what is in use and what the submission asked for."""

    status = 429
    openai_code = "token_limit_exceeded"

    def __init__(
        self, tenant: str, limit: str, value: int, in_use: int, requested: int, retry_after: int
    ) -> None:
        self.tenant, self.limit, self.value = tenant, limit, value
        self.in_use, self.requested, self.retry_after = in_use, requested, retry_after
        self.headers = {"Retry-After": str(retry_after)}
        super().__init__(
            f"tenant {tenant!r} is over its quota {limit} = {value:,}: {in_use:,} in use and "
            f"this asks for {requested:,} more; retry after {retry_after} s, or ask an "
            f"operator to raise it (docbatch tenants set-limits {tenant} "
            f"--{limit.replace('_', '-')} N)"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "limit": self.limit,
            "value": self.value,
            "in_use": self.in_use,
            "requested": self.requested,
            "retry_after": self.retry_after,
            "message": str(self),
        }


class BatchLengthMismatch(DocbatchError):
    """A handler bug: ``predict`` must return one output per input (the batch's rows fail,
    one by one, with this message naming both lengths)."""


class PermanentError(DocbatchError):
    pass


class ModelUnavailable(PermanentError):
    pass


class PayloadTooLarge(InputError):
    """The request body is over DOCBATCH_MAX_REQUEST_BYTES (HTTP 413)."""

    status = 413


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

    status = 415
