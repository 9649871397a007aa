"""Fake-handler workers on a private queue prefix, so they never steal the session's work.

``private_queues`` points this test process's settings at a fresh queue prefix (jobs
created now get units on ``<prefix>.<task>``); ``fake_worker_env`` is what a worker on
those queues needs. ``settings_override`` and ``limits`` set other settings for one test
(tests/settings_env.py). Example::

    def test_x(api, private_queues, settings_override):
        settings_override.set(unit_max_documents="3")
        w = WorkerProcess("summarize", env=fake_worker_env(private_queues, sleep=0.3))
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.settings_env import Overrides, override

FAKE = "tests.fakes:UpperHandler"


def fake_worker_env(prefix: str, sleep: float = 0.0, **extra: str) -> dict[str, str]:
    """Worker env running tests.fakes.UpperHandler as the summarize handler on ``prefix``'s
    queues, sleeping ``sleep`` seconds per batch."""
    return {
        "DOCBATCH_QUEUE_PREFIX": prefix,
        "DOCBATCH_MODELS__SUMMARIZE__HANDLER": FAKE,
        "DOCBATCH_FAKE_SLEEP": str(sleep),
        **extra,
    }


@pytest.fixture
def private_queues() -> Iterator[str]:
    with override(queue_prefix=f"t{secrets.token_hex(4)}") as env:
        yield env["DOCBATCH_QUEUE_PREFIX"]


@pytest.fixture
def settings_override() -> Iterator[Overrides]:
    """``settings_override.set(name="value")``: in force until the test ends."""
    overrides = Overrides()
    yield overrides
    overrides.restore()


@pytest.fixture
def limits(settings_override: Overrides) -> dict[str, str]:
    """Set DOCBATCH_* limits for one test: ``limits["MAX_DOCUMENT_BYTES"] = "100"`` is in
    force at once, until the test ends."""

    class Limits(dict[str, str]):
        def __setitem__(self, key: str, value: str) -> None:
            super().__setitem__(key, value)
            settings_override.set(**{key: value})

    return Limits()
