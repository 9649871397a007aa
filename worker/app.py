"""The Celery app the worker and beat run: ``docbatch.domain.broker``'s app with the tasks of
worker/tasks.py registered (``celery -A docbatch.worker.app``). The api never imports this: it
publishes through ``docbatch.domain.publish``."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging

from docbatch.domain.broker import app
from docbatch.schema.logs import configure
from docbatch.schema.settings import get_settings

app.conf.imports = ("docbatch.worker.tasks",)


def _json_logs(loglevel: Any = "INFO", **_: Any) -> None:
    configure("json", loglevel or "INFO")


# DOCBATCH_LOG_FORMAT=json: worker, beat, webhooks and maintenance write JSON lines
# (docbatch.schema.logs); a receiver of setup_logging replaces Celery's own set-up.
if get_settings().log_format == "json":
    setup_logging.connect(_json_logs, weak=False)

__all__ = ["app"]
