"""Every api request: a request id (the caller's ``X-Request-ID`` if it is sane, else a new
one) bound to the request's log lines and echoed in the response's ``X-Request-ID``; its
duration into ``docbatch_api_request_duration_seconds`` by route template, method and
status; with DOCBATCH_LOG_FORMAT=json, one ``request`` line per request (uvicorn's own
access log is off then)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docbatch.api.metrics import REQUEST_SECONDS
from docbatch.schema.logs import log_context

log = logging.getLogger("docbatch.api.access")
HEADER = "X-Request-ID"
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id_of(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return str(value) if value else None


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths are not labels (a scanner would make one series per path it tries).
    return str(path) if path else "unmatched"


class RequestLog:
    """Pure ASGI middleware (no task hop: the request's context is the endpoint's)."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(HEADER.lower().encode(), b"").decode()
        request_id = given if _SANE.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message).append(HEADER, request_id)
            await send(message)

        start = time.perf_counter()
        with log_context(request_id=request_id) as bound:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - start
                route, method = _route(scope), scope.get("method", "")
                REQUEST_SECONDS.labels(route, method, str(status)).observe(seconds)
                if self.access_log:
                    log.info(
                        "%s %s %d %.3fs",
                        method,
                        scope.get("path", ""),
                        status,
                        seconds,
                        extra={
                            "method": method,
                            "path": scope.get("path", ""),
                            "route": route,
                            "status": status,
                            "seconds": round(seconds, 4),
                            **({"tenant": bound["tenant"]} if "tenant" in bound else {}),
                        },
                    )
