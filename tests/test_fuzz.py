"""Schemathesis against the app's own OpenAPI schema, in-process and authenticated: no
input it generates may produce a 5xx. Bounded (a few dozen examples per operation)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from docbatch.api.app import create_app
from tests.fixtures import new_api_key
from tests.settings_env import override

# NDJSON bodies: fuzzed as text (mostly malformed lines, which must be 4xx, never 5xx).
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
app = create_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def auth(database: str) -> Iterator[dict[str, str]]:
    # Jobs the fuzzer creates go to queues no worker consumes (the run's Redis db is
    # flushed at the end), so the session's workers never process fuzz input.
    with override(queue_prefix="fuzz"):
        yield {"Authorization": f"Bearer {new_api_key('fuzz')}"}


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case, auth):
    case.call_and_validate(headers=auth, checks=[not_a_server_error])
