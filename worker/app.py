"""The Celery app the worker and beat run: ``docbatch.domain.broker``'s app with the tasks of
worker/tasks.py registered (``celery -A docbatch.worker.app``). The api never imports this: it
publishes through ``docbatch.domain.publish``."""

from __future__ import annotations

from docbatch.domain.broker import app

app.conf.imports = ("docbatch.worker.tasks",)

__all__ = ["app"]
