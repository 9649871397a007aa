"""The test harness's Redis db index claim, on a private redis-server: a live run's index is
never taken, a dead run's is, and someone else's data is never touched."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_lib

from tests.procs import RedisServer
from tests.redis_index import (
    LOCK_KEY,
    LOCK_SECONDS,
    MARKER_KEY,
    claim_redis_index,
    lock_is_stale,
)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def _db(server: RedisServer, index: int) -> redis_lib.Redis:
    return redis_lib.Redis(host="127.0.0.1", port=server.port, db=index)


def test_a_lock_is_dead_without_an_expiry_or_when_an_old_harness_set_it_long_ago() -> None:
    assert lock_is_stale(-2) and lock_is_stale(-1)
    assert not lock_is_stale(LOCK_SECONDS)
    assert not lock_is_stale(4 * 3600 - 600)  # an older harness's run, ten minutes in
    assert lock_is_stale(4 * 3600 - 46 * 60)  # an older harness's lock set 46 minutes ago


def test_the_claim_skips_live_runs_and_foreign_data_and_takes_over_a_dead_run(
    server: RedisServer,
) -> None:
    for index in range(15, 10, -1):
        _db(server, index).set(LOCK_KEY, "alive", ex=LOCK_SECONDS)  # live runs
    _db(server, 10).set("myapp:session", "theirs")  # another application's data, no lock
    dead = _db(server, 9)
    dead.set(LOCK_KEY, "killed")  # no expiry: a run that died before the harness renewed
    dead.rpush("docbatch.embed", "unit-1")
    killed = _db(server, 8)  # a killed run's private test queue, under the marker
    killed.set(MARKER_KEY, "1")
    killed.rpush("tdb312baf.maintenance", "tick")
    url = f"redis://127.0.0.1:{server.port}"

    claim = claim_redis_index(url, "me")
    try:
        assert claim.index == 9
        assert dead.get(LOCK_KEY) == b"me"
        assert 0 < dead.ttl(LOCK_KEY) <= LOCK_SECONDS
        assert dead.llen("docbatch.embed") == 0  # the dead run's leftovers are cleared
        assert _db(server, 10).get("myapp:session") == b"theirs"
        assert _db(server, 10).get(LOCK_KEY) is None
        second = claim_redis_index(url, "other")
        try:
            assert second.index == 8
            assert killed.llen("tdb312baf.maintenance") == 0
            assert killed.get(MARKER_KEY) == b"1" and killed.get(LOCK_KEY) == b"other"
        finally:
            second.release()
    finally:
        claim.release()
