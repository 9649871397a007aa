"""Which handler serves a task: read from the model registry in settings."""

from __future__ import annotations

import importlib

from schema.settings import Settings
from worker.handlers.base import Handler


def handler_class(path: str) -> type[Handler]:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"handler {path!r} must look like 'package.module:ClassName'")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Handler)):
        raise TypeError(f"{path} is not a worker.handlers.base.Handler subclass")
    return cls


def load_handler(task: str, settings: Settings) -> Handler:
    """Instantiate (not yet set up) the handler configured for ``task``."""
    config = settings.model_for(task)
    return handler_class(config.handler)(config)
