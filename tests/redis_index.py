"""One Redis db index per test or bench run, held by a lock the run renews while it lives.

A run that was killed frees its index within a minute (the lock expires). A lock without an
expiry, or an older harness's 4-hour lock set more than 45 minutes ago, belongs to no live run
and is taken over. A claimed index also gets a marker key without expiry, so the leftovers of a
killed run (its test queues have private prefixes) are known to be docbatch's and cleared by
the next claim; an index holding other keys and no marker is someone else's data: it is
never claimed nor cleared. When every index is busy the claim waits
(``DOCBATCH_TEST_REDIS_WAIT_SECONDS``, default 600) before giving up.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

import redis as redis_lib

LOCK_KEY = "docbatch:test-run-lock"
MARKER_KEY = "docbatch:test-run-index"  # "docbatch's test runs use this index"
LOCK_SECONDS = 60
_OLD_LOCK_SECONDS = 4 * 3600
_OUR_KEYS = (b"docbatch", b"_kombu", b"unacked", b"celery")


def lock_is_stale(ttl: int) -> bool:
    """Whether a lock with ``ttl`` seconds left (Redis' -2 gone, -1 no expiry) is dead."""
    if ttl in (-2, -1):
        return True
    if ttl > LOCK_SECONDS:
        return ttl < _OLD_LOCK_SECONDS - 45 * 60
    return False


def _try_claim(client: redis_lib.Redis, run_id: str) -> bool:
    with client.pipeline() as pipe:
        try:
            pipe.watch(LOCK_KEY)
            if not lock_is_stale(pipe.ttl(LOCK_KEY)):
                return False
            keys = [k for k in pipe.scan_iter(count=1000) if k != LOCK_KEY.encode()]
            ours = MARKER_KEY.encode() in keys
            if not ours and any(not key.startswith(_OUR_KEYS) for key in keys):
                return False
            pipe.multi()
            pipe.set(LOCK_KEY, run_id, ex=LOCK_SECONDS)
            pipe.set(MARKER_KEY, "1")
            for key in keys:  # leftovers of a run that died
                if key != MARKER_KEY.encode():
                    pipe.delete(key)
            pipe.execute()
            return True
        except redis_lib.WatchError:
            return False


def _keep(url: str, run_id: str, stop: threading.Event) -> None:
    client = redis_lib.Redis.from_url(url)
    while not stop.wait(LOCK_SECONDS / 4):
        try:
            if client.get(LOCK_KEY) in (None, run_id.encode()):
                client.set(LOCK_KEY, run_id, ex=LOCK_SECONDS)
        except redis_lib.RedisError:
            pass  # Redis unreachable for a moment; the next beat renews


@dataclass
class Claim:
    index: int
    _stop: threading.Event

    def release(self) -> None:
        """Stop renewing the lock (the caller flushes the index, lock included)."""
        self._stop.set()


def claim_redis_index(redis_url: str, run_id: str) -> Claim:
    """Claim a free db index 1..15 at ``redis_url``, renewing its lock until released."""
    wait = float(os.environ.get("DOCBATCH_TEST_REDIS_WAIT_SECONDS", "600"))
    deadline = time.monotonic() + wait
    while True:
        for index in range(15, 0, -1):
            url = f"{redis_url}/{index}"
            if _try_claim(redis_lib.Redis.from_url(url), run_id):
                stop = threading.Event()
                threading.Thread(target=_keep, args=(url, run_id, stop), daemon=True).start()
                return Claim(index, stop)
        if time.monotonic() >= deadline:
            raise RuntimeError(
                "every Redis db index 1..15 is held by another run or holds other data "
                f"(waited {wait:.0f} s, DOCBATCH_TEST_REDIS_WAIT_SECONDS)"
            )
        print("docbatch: every Redis db index is busy; waiting for one", file=sys.stderr)
        time.sleep(5)
