"""Which handler serves a task: read from the model registry in settings."""

from __future__ import annotations

import importlib

from docbatch.schema.settings import Settings
from docbatch.worker.handlers.base import Handler

# Handler paths written before docbatch had one import root (``worker.handlers.embed:...``).
_LEGACY_ROOTS = ("api.", "domain.", "schema.", "worker.")


def handler_class(path: str) -> type[Handler]:
    module_name, _, attr = path.partition(":")
    if module_name.startswith(_LEGACY_ROOTS):
        module_name = f"docbatch.{module_name}"
    if not attr:
        raise ValueError(f"handler {path!r} must look like 'package.module:ClassName'")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Handler)):
        raise TypeError(f"{path} is not a docbatch.worker.handlers.base.Handler subclass")
    return cls


def load_handler(name: str, settings: Settings) -> Handler:
    """Instantiate (not yet set up) the handler of deployment ``name`` (a task's name: the
    task's default deployment)."""
    config = settings.model_for(name)
    handler = handler_class(config.handler)(config)
    handler.deployment = name
    # Every deployment of the same task: reuse matches their results by model, not name.
    handler.siblings = [d.name for d in settings.deployments_of(settings.task_of(name))]
    return handler
