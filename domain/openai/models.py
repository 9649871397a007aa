"""``/v1/models``: the deployments this fleet serves, in OpenAI's shape.

Each deployment is a model (``id`` = its name), and so is each ``DOCBATCH_OPENAI_MODELS``
alias (``id`` = the alias); both are what a batch line's ``body.model`` may name. Extra
fields say what serves it: ``task``, ``deployment`` (an alias's target) and the
configured ``model`` (hub id or path). ``client.models.list()`` and ``.retrieve(id)`` of
the official client read them.
"""

from __future__ import annotations

import time
from typing import Any

from docbatch.schema.errors import BatchApiError
from docbatch.schema.settings import Settings

# Models have no creation time here; the api process's start is stable while it runs.
STARTED = int(time.time())


def _entry(id_: str, deployment: str, settings: Settings, alias: bool) -> dict[str, Any]:
    config = settings.model_for(deployment)
    return {
        "id": id_,
        "object": "model",
        "created": STARTED,
        "owned_by": "docbatch",
        "task": settings.task_of(deployment),
        "deployment": deployment,
        "model": config.model or None,
        "revision": config.revision if config.model else None,
        "alias": alias,
    }


def alias_target(alias: str, settings: Settings) -> str | None:
    """The deployment an alias names: its value is a deployment's name or a task's (its
    default deployment)."""
    target = settings.openai_models.get(alias)
    return target if target is not None and settings.is_deployment(target) else None


def list_models(settings: Settings) -> list[dict[str, Any]]:
    out = [_entry(name, name, settings, False) for name in settings.fleet]
    for alias in sorted(settings.openai_models):
        target = alias_target(alias, settings)
        if target is not None and alias not in settings.fleet:
            out.append(_entry(alias, target, settings, True))
    return out


def get_model(model_id: str, settings: Settings) -> dict[str, Any]:
    if settings.is_deployment(model_id):
        return _entry(model_id, model_id, settings, False)
    target = alias_target(model_id, settings)
    if target is None:
        raise BatchApiError(
            404, f"The model {model_id!r} does not exist", param="model", code="model_not_found"
        )
    return _entry(model_id, target, settings, True)
