"""The FastAPI application: ``uvicorn api.app:app`` (or ``docbatch api``)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api import metrics, openapi
from api.routers import health, jobs, schedules, stats, ui
from schema.errors import (
    Conflict,
    InputError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)


def create_app() -> FastAPI:
    app = FastAPI(title="docbatch", version="0.1.0")
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(metrics.router)
    app.include_router(schedules.router)
    app.include_router(stats.router)
    app.include_router(ui.router)
    ui.mount_static(app)
    openapi.install(app)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        status = 422
        if isinstance(exc, PayloadTooLarge):
            status = 413
        elif isinstance(exc, UnsupportedMediaType):
            status = 415
        return JSONResponse({"error": exc.to_dict(), "detail": str(exc)}, status_code=status)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ["body"], "msg": "invalid"}
        field = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "header"))
        return JSONResponse(
            {"error": {"field": field, "message": first["msg"]}, "detail": str(exc.errors())},
            status_code=422,
        )

    return app


app = create_app()
