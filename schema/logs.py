"""Log lines for machines: DOCBATCH_LOG_FORMAT=json makes every process (api, workers,
beat, webhooks, maintenance) write one JSON object per line to stderr.

Each line carries what applies where it was written: ``job_id``, ``unit_id``, ``tenant``,
``task`` (the docbatch task: summarize, extract, ...), ``request_id`` on the api. Code
binds them for a stretch of work and every line inside carries them::

    with log_context(job_id=job.id, unit_id=unit.id, tenant=job.tenant):
        log.info("unit claimed")   # {"message": "unit claimed", "job_id": ..., ...}

``bind_process(task="embed")`` sets fields for the whole process (a worker's task). The
fields are plain ``extra`` attributes too, so ``log.info("...", extra={"job_id": j})``
works without a context. The text format (the default) is unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

FIELDS = ("job_id", "unit_id", "tenant", "task", "request_id")
_process: dict[str, Any] = {}
# A dict per stretch of work: the api's middleware makes one per request and a dependency
# adds the tenant to it, which the request's later lines (in other tasks or threads, whose
# contexts are copies) still see.
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "docbatch_log_context", default=None
)


def current() -> dict[str, Any]:
    """The fields bound here (process-wide ones first)."""
    return {**_process, **(_context.get() or {})}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Bind ``fields`` (None values skipped) for the block; yields the mutable dict."""
    bound = {**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(bound)
    try:
        yield bound
    finally:
        _context.reset(token)


def add_to_context(**fields: Any) -> None:
    """Add fields to the dict bound by the enclosing ``log_context`` (if any)."""
    bound = _context.get()
    if bound is not None:
        bound.update({k: v for k, v in fields.items() if v is not None})


def bind_process(**fields: Any) -> None:
    """Fields every line of this process carries (a worker's ``task``)."""
    _process.update({k: v for k, v in fields.items() if v})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the bound fields, the
    exception if any, and any other ``extra`` given to the call."""

    _standard = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        line.update(current())
        for key, value in vars(record).items():
            if key not in self._standard and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(log_format: str, level: int | str = logging.INFO) -> bool:
    """With ``log_format == "json"``: the root logger writes JSON lines to stderr (every
    other handler removed); returns whether it did."""
    if log_format != "json":
        return False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Celery's and uvicorn's loggers keep their own handlers unless told to propagate.
    for name in ("celery", "celery.task", "celery.redirected", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
    return True
