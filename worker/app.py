"""The Celery app the worker and beat run: ``domain.broker``'s app with the tasks of
worker/tasks.py registered (``celery -A worker.app``). The api never imports this: it
publishes through ``domain.publish``."""

from __future__ import annotations

from domain.broker import app

app.conf.imports = ("worker.tasks",)

__all__ = ["app"]
