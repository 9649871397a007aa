"""Settings for a test, set where every part reads them: this process's environment.

The api under TestClient, ``domain``/``schema`` code called directly and the worker
processes a test starts all read ``DOCBATCH_*`` (``get_settings()`` caches it), so a test
overrides a setting in one place and gets the old value back afterwards. Example::

    with override(unit_max_documents="3", queue_prefix="t1") as env:
        worker = WorkerProcess("summarize", env=env)   # the same values in the worker
        api.post("/v1/jobs", ...)                      # units of at most 3 documents
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from docbatch.schema.settings import get_settings


class Overrides:
    """``DOCBATCH_*`` values set on top of the environment; ``restore()`` undoes them all."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, **values: str) -> dict[str, str]:
        """Set ``DOCBATCH_<NAME>=value`` for each ``name=value``; returns those variables."""
        env = {f"DOCBATCH_{name.upper()}": value for name, value in values.items()}
        for key, value in env.items():
            self._saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        get_settings.cache_clear()
        return env

    def restore(self) -> None:
        for key, old in self._saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        self._saved.clear()
        get_settings.cache_clear()


@contextlib.contextmanager
def override(**values: str) -> Iterator[dict[str, str]]:
    """Settings ``name=value`` in force inside the block; yields the ``DOCBATCH_*`` env."""
    overrides = Overrides()
    try:
        yield overrides.set(**values)
    finally:
        overrides.restore()
