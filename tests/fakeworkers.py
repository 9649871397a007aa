"""Fake-handler workers on a private queue prefix, so they never steal the session's work.

``private_queues`` points this test process's settings at a fresh queue prefix (jobs
created now get units on ``<prefix>.<task>``); ``fake_worker_env`` is what a worker on
those queues needs. Example::

    def test_x(api, private_queues):
        w = WorkerProcess("summarize", env=fake_worker_env(private_queues)).wait_ready()
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from schema.settings import get_settings

FAKE = "tests.fakes:UpperHandler"


def fake_worker_env(prefix: str, **extra: str) -> dict[str, str]:
    return {
        "DOCBATCH_QUEUE_PREFIX": prefix,
        "DOCBATCH_MODELS__SUMMARIZE__HANDLER": FAKE,
        **extra,
    }


@pytest.fixture
def private_queues() -> Iterator[str]:
    prefix = f"t{secrets.token_hex(4)}"
    old = os.environ.get("DOCBATCH_QUEUE_PREFIX")
    os.environ["DOCBATCH_QUEUE_PREFIX"] = prefix
    get_settings.cache_clear()
    try:
        yield prefix
    finally:
        if old is None:
            os.environ.pop("DOCBATCH_QUEUE_PREFIX", None)
        else:
            os.environ["DOCBATCH_QUEUE_PREFIX"] = old
        get_settings.cache_clear()


@pytest.fixture
def limits() -> Iterator[dict[str, str]]:
    """Set DOCBATCH_* limits for one test: ``limits["MAX_DOCUMENT_BYTES"] = "100"``, then
    call ``apply()``-free: the dict is applied on every assignment."""
    saved = dict(os.environ)

    class Limits(dict[str, str]):
        def __setitem__(self, key: str, value: str) -> None:
            super().__setitem__(key, value)
            os.environ[f"DOCBATCH_{key}"] = value
            get_settings.cache_clear()

    yield Limits()
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()
