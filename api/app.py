"""The FastAPI application: ``uvicorn docbatch.api.app:app`` (or ``docbatch api``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from docbatch.api import metrics, openapi
from docbatch.api.logs import RequestLog
from docbatch.api.routers import (
    accounting,
    admin,
    health,
    jobs,
    openai_batch,
    schedules,
    stats,
    ui,
    usage,
)
from docbatch.domain import tracing
from docbatch.domain.openai.convert import unmapped_openai_models
from docbatch.schema.errors import BatchApiError, DocbatchError, InputError, QuotaExceeded
from docbatch.schema.logs import configure as configure_logs
from docbatch.schema.settings import Settings, get_settings

log = logging.getLogger("docbatch.api")


def _version() -> str:
    try:
        return version("docbatch")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; reads nothing from the database or the broker until a request comes."""
    settings = settings or get_settings()
    configure_logs(settings.log_format)  # uvicorn's worker processes import only this
    tracing.setup(settings.otlp_endpoint, "docbatch-api")
    openai_warning = unmapped_openai_models(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if openai_warning:  # once the server starts, in its log
            log.warning(openai_warning)
        yield

    # The installed package's version (pyproject.toml), as `docbatch --version` prints it.
    app = FastAPI(title="docbatch", version=_version(), lifespan=lifespan)
    app.add_middleware(RequestLog, access_log=settings.log_format == "json")
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(metrics.router)
    app.include_router(openai_batch.router)
    app.include_router(schedules.router)
    app.include_router(stats.router)
    app.include_router(usage.router)
    app.include_router(ui.router)
    app.include_router(accounting.router)
    ui.mount_static(app)
    openapi.install(app)

    @app.exception_handler(DocbatchError)
    async def _docbatch_error(request: Request, exc: DocbatchError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ["body"], "msg": "invalid"}
        field = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "header"))
        if _openai_path(request):
            return _openai_error(422, f"{field}: {first['msg']}", field or None)
        return JSONResponse(
            {"error": {"field": field, "message": first["msg"]}, "detail": str(exc.errors())},
            status_code=422,
        )

    return app


def error_response(request: Request, exc: DocbatchError) -> JSONResponse:
    """The answer to a refused request: the error class's status and headers, in OpenAI's
    envelope on the routes the ``openai`` client calls. A status of 500 is no answer: the
    error propagates (logged, a plain 500)."""
    if exc.status >= 500:
        raise exc
    if isinstance(exc, BatchApiError):
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)
    field = exc.field if isinstance(exc, InputError) else None
    if _openai_path(request):
        return _openai_error(exc.status, str(exc), field, exc.openai_code, exc.headers or None)
    body: dict[str, object] = {"detail": str(exc)}
    if isinstance(exc, InputError | QuotaExceeded):
        body = {"error": exc.to_dict(), "detail": str(exc)}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers or None)


def _openai_path(request: Request) -> bool:
    return request.url.path.startswith(("/v1/files", "/v1/batches"))


def _openai_error(
    status: int,
    message: str,
    param: str | None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """OpenAI's error envelope, for the routes the ``openai`` client calls."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


app = create_app()
